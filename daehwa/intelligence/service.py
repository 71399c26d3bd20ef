"""The turn-pipeline hooks of conversation intelligence (docs/intelligence.md, docs/pipeline.md).

- ``MoodContributor``: classifies the user's message from ``turn.query_vector`` (no second embedding), stores
  ``mood`` on the user message's meta and, for a persona with ``tone = "adaptive"``, adds a tone instruction.
- ``InterestsContributor``: for a persona with ``interests = true`` and a signed-in user who has not turned
  remembered interests off, adds "사용자는 X, Y에 관심이 많습니다" from the user's profile.
- ``RecommendContributor``: for a persona with a ``catalogue``, picks items (``recommend.pick``), puts them on the
  reply as ``recommendations`` and adds one suggestion sentence.
- ``InterestsObserver``: after the reply, extracts the message's terms and adds them to the profile (background),
  unless the user turned remembered interests off.

``Intelligence`` holds what they share (the mood model, the extractor, loaded catalogues) and is what the API's
``/api/me/interests`` and feedback routes use. Every hook may fail: the pipeline then drops its writes and the
reply goes on (``daehwa_pipeline_hook_failures_total{hook=...}``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InvalidRequest, NotFound
from ..pipeline import Turn, TurnFinished
from ..stores.base import ProfileStore
from ..types import User
from . import interests as interests_mod
from .interests import InterestExtractor
from .mood import Mood, MoodModel, keyword_mood, load_model
from .recommend import Catalogue, load_catalogue, pick, suggestion_sentence

log = logging.getLogger("daehwa.intelligence")

_HANGUL = re.compile(r"[\uac00-\ud7a3]")

#: The tone instructions of an adaptive persona, by mood and language (a persona's [tone_templates] override them).
DEFAULT_TONE: dict[str, dict[str, str]] = {
    "negative": {
        "ko": "사용자가 지금 속상하거나 힘든 상태로 보입니다. "
        "먼저 따뜻하게 공감하고 위로한 뒤, 차분하고 부드럽게 도와주세요.",
        "en": "The user seems upset or having a hard time. Acknowledge their feelings warmly and comfort them first,"
        " then help calmly and gently.",
    },
    "positive": {
        "ko": "사용자가 기분이 좋아 보입니다. 그 기쁨을 함께 나누며 밝고 따뜻한 어조로 답하세요.",
        "en": "The user seems happy. Share their joy and answer in a bright, warm tone.",
    },
}
#: Below this confidence the mood is stored but the tone is left alone (0.5 for the KOTE-trained weights, which are
#: less overconfident than the first ones: docs/intelligence.md, "Tone").
TONE_MIN_CONFIDENCE = 0.5


def turn_locale(turn: Turn) -> str:
    """Korean when the message is Korean (or the request asks for it), else English."""
    if turn.content and _HANGUL.search(turn.content):
        return "ko"
    return "ko" if (turn.request.locale or "").startswith("ko") else "en"


@dataclass
class Intelligence:
    """What the hooks and the API routes share; built once by ``build_services``."""

    store: ProfileStore
    embedder: Any = None  # the context engine's embedder (catalogue vectors), None without the recall extra
    mood_model: MoodModel | None = None
    extractor: InterestExtractor = field(default_factory=InterestExtractor)
    catalogue_dirs: tuple[Path, ...] = ()
    interests_shown: int = 3
    _catalogues: dict[str, Catalogue] = field(default_factory=dict)

    @classmethod
    def build(cls, store: ProfileStore, *, embedder: Any = None, catalogue_dirs: tuple[Path, ...] = ()) -> Intelligence:
        return cls(store=store, embedder=embedder, mood_model=load_model(), catalogue_dirs=catalogue_dirs)

    # -- mood --
    def mood(self, text: str, vector: Any) -> Mood:
        if vector is not None and self.mood_model is not None and len(vector) == self.mood_model.dim:
            return self.mood_model.classify(vector)
        return keyword_mood(text)

    # -- catalogues --
    def catalogue(self, name: str) -> Catalogue:
        found = self._catalogues.get(name)
        if found is None:
            found = self._catalogues[name] = load_catalogue(name, search=self.catalogue_dirs)
        return found

    # -- interests (the API's view) --
    async def remembers(self, user: User) -> bool:
        """Whether the user's interests are learned and used: a signed-in user who did not turn them off."""
        return not user.anonymous and await self.store.interests_enabled(user.id)

    async def interests(self, user_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
        records = await self.store.list_interests(user_id, limit=limit)
        now = datetime.now(UTC)
        return [{"term": t, "weight": round(w, 3)} for t, w in interests_mod.decayed(records, now)]

    async def learn(self, user_id: str, text: str) -> None:
        counts = await asyncio.to_thread(self.extractor.extract, text)
        if counts:
            await self.store.add_interests(user_id, interests_mod.increments(counts, datetime.now(UTC)))

    async def without_dismissed(self, user_id: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take the items the user marked "not interested" out of the ``recommendations`` of stored replies (API
        message JSON, changed in place), so a dismissed card stays gone after a reload; one feedback read per
        catalogue on the page."""
        named = {p.get("catalogue") for m in messages for p in m.get("recommendations") or ()}
        dismissed: dict[Any, set[str]] = {}
        for name in named:
            if isinstance(name, str):
                feedback = await self.store.load_feedback(user_id, name)
                dismissed[name] = {item for item, f in feedback.items() if f.dismissed}
        for m in messages:
            picks = m.get("recommendations")
            if picks:
                m["recommendations"] = [p for p in picks if p.get("id") not in dismissed.get(p.get("catalogue"), ())]
        return messages

    async def feedback(self, user_id: str, catalogue: str, item_id: str, action: str) -> None:
        if action not in ("click", "dismiss"):
            raise InvalidRequest('action must be "click" or "dismiss".', param="action")
        try:
            found = self.catalogue(catalogue)
        except ConfigError:
            raise NotFound(f"No catalogue {catalogue!r}.") from None
        if found.get(item_id) is None:
            raise NotFound(f"No item {item_id!r} in catalogue {catalogue!r}.")
        await self.store.record_feedback(user_id, found.name, item_id, action)


# -- the hooks -------------------------------------------------------------------------------------------------------
@dataclass
class MoodContributor:
    intel: Intelligence
    name: str = "mood"

    def applies(self, turn: Turn) -> bool:
        return bool(turn.content)

    async def contribute(self, turn: Turn) -> None:
        if not turn.content:
            return
        mood = self.intel.mood(turn.content, turn.query_vector)
        turn.user_meta["mood"] = mood.as_meta()
        persona = turn.persona
        if persona is None or persona.tone != "adaptive" or mood.label == "neutral":
            return
        if mood.confidence < TONE_MIN_CONFIDENCE:
            return
        locale = turn_locale(turn)
        templates = persona.tone_templates.get(mood.label) or DEFAULT_TONE[mood.label]
        text = templates.get(locale) or templates.get("en") or DEFAULT_TONE[mood.label][locale]
        turn.system_parts.append(text)


@dataclass
class InterestsContributor:
    intel: Intelligence
    name: str = "interests"

    def applies(self, turn: Turn) -> bool:
        return turn.persona is not None and turn.persona.interests

    async def contribute(self, turn: Turn) -> None:
        if turn.persona is None or not turn.persona.interests or not await self.intel.remembers(turn.user):
            return
        records = await self.intel.store.list_interests(turn.user.id, limit=20)
        terms = interests_mod.top_terms(records, self.intel.interests_shown)
        if terms:
            turn.system_parts.append(interests_mod.interests_sentence(terms, turn_locale(turn)))


@dataclass
class RecommendContributor:
    intel: Intelligence
    name: str = "recommendations"
    limit: int = 2
    #: How long a turn waits for the catalogue's vectors while they are computed (the first turns after a start,
    #: while the embedding model loads): past it, this turn ranks by tags, interests and feedback alone.
    vector_wait: float = 1.0

    def applies(self, turn: Turn) -> bool:
        return turn.persona is not None and turn.persona.catalogue is not None and bool(turn.content)

    async def contribute(self, turn: Turn) -> None:
        persona = turn.persona
        if persona is None or persona.catalogue is None or not turn.content:
            return
        catalogue = self.intel.catalogue(persona.catalogue)
        vectors = None
        if turn.query_vector is not None and self.intel.embedder is not None:
            vectors = await catalogue.ensure_vectors(self.intel.embedder, wait=self.vector_wait)
        interests: list[str] = []
        feedback = {}
        if not turn.user.anonymous:
            if await self.intel.remembers(turn.user):
                records = await self.intel.store.list_interests(turn.user.id, limit=20)
                interests = interests_mod.top_terms(records, 10, min_weight=0.5)
            # "Not interested" is the user's explicit choice, not something learned: it counts either way.
            feedback = await self.intel.store.load_feedback(turn.user.id, catalogue.name)
        picks = pick(
            catalogue,
            query_vector=turn.query_vector if vectors is not None else None,
            text=turn.content,
            interests=interests,
            feedback=feedback,
            limit=self.limit,
        )
        if not picks:
            return
        locale = turn_locale(turn)
        turn.reply_meta["recommendations"] = [p.as_meta(catalogue.name, locale) for p in picks]
        turn.system_parts.append(suggestion_sentence(picks, locale))


@dataclass
class InterestsObserver:
    intel: Intelligence
    name: str = "interests-learn"

    def applies(self, turn: Turn, finished: TurnFinished) -> bool:
        return not (turn.user.anonymous or not turn.content or turn.stateless or turn.blocked)

    async def finished(self, turn: Turn, finished: TurnFinished) -> None:
        if turn.user.anonymous or not turn.content or turn.stateless or turn.blocked:
            return
        if not await self.intel.remembers(turn.user):
            return
        await self.intel.learn(turn.user.id, turn.content)


def hooks(intel: Intelligence) -> tuple[list[Any], list[Any]]:
    """The contributors and observers, in pipeline order."""
    contributors = [MoodContributor(intel), InterestsContributor(intel), RecommendContributor(intel)]
    return contributors, [InterestsObserver(intel)]
