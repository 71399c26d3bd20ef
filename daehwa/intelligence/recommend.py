"""Recommendations from a persona's catalogue: embedding similarity + tag overlap + interests + feedback, no LLM.

A catalogue is a TOML file (``[[items]]``) or JSONL (one item per line) with ``id``, ``title``, ``url``, ``tags``
and ``description`` (each text a string or a ``{ko, en}`` table). Built-in ones live in ``daehwa/catalogues``;
a persona may also name a path. Item vectors are computed once per catalogue (``passage`` embeddings of title,
description and tags) and compared with the turn's ``query_vector``.

Score of an item for a turn::

    (similarity(message, item) - mean similarity over the catalogue) + 0.04 * tags in the message
    + 0.03 * tags matching the user's interests + 0.02 * log(1 + clicks)

An item must be relevant to the message itself (margin + message tags >= ``min_relevance``, 0.03); interests and
clicks only raise it. An item marked "not interested" is never offered again. e5 similarities of unrelated short
texts sit around 0.80-0.84, so the similarity counts only as its margin over the catalogue's mean for this
message: a greeting has no margin, "파이썬 코드가 느려요" has 0.07 for the Python guide. Items scoring
``min_score`` (0.05) or more are offered, at most ``limit`` of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..stores.base import FeedbackRecord

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "catalogues"
_WORD = re.compile(r"[\w+#]+")


@dataclass(frozen=True, slots=True)
class CatalogueItem:
    id: str
    title: Mapping[str, str]
    url: str
    tags: tuple[str, ...]
    description: Mapping[str, str] = field(default_factory=dict)

    def text(self, key: str, locale: str) -> str:
        values = self.title if key == "title" else self.description
        return values.get(locale) or values.get("en") or next(iter(values.values()), "")

    def document(self) -> str:
        parts = [*self.title.values(), *self.description.values(), " ".join(self.tags)]
        return " / ".join(p for p in parts if p)


@dataclass
class Catalogue:
    name: str
    items: tuple[CatalogueItem, ...]
    vectors: Any = None  # numpy (len(items), dim) once embedded
    embedder_name: str = ""
    _embedding: asyncio.Task[Any] | None = None

    def get(self, item_id: str) -> CatalogueItem | None:
        return next((i for i in self.items if i.id == item_id), None)

    async def ensure_vectors(self, embedder: Any, *, wait: float | None = None) -> Any:
        """The items' vectors, computed once per embedder; None if they are not ready within ``wait`` seconds.

        The computation runs in a task of its own that a caller's timeout or cancellation does not stop: a large
        catalogue, or the embedding model loading on the first turns after a start, is embedded once in the
        background while turns go on without vectors (tags, interests and feedback still rank the items), instead
        of being started again and cut off by every turn's time bound. A failure is logged and tried again on a
        later turn.
        """
        if self.vectors is not None and self.embedder_name == embedder.name:
            return self.vectors
        task = self._embedding
        if task is None or task.done():
            task = self._embedding = asyncio.ensure_future(self._embed(embedder))
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(task)
        except TimeoutError:
            return None
        return self.vectors if self.embedder_name == embedder.name else None

    async def _embed(self, embedder: Any) -> None:
        try:
            vectors = await embedder.embed([i.document() for i in self.items], kind="passage")
        except Exception:  # EmbeddingError, or anything the model's engine raised: a later turn tries again
            log.warning("catalogue %s: embedding its items failed", self.name, exc_info=True)
            return
        finally:
            self._embedding = None
        self.vectors, self.embedder_name = vectors, embedder.name


def _texts(value: Any, where: str) -> dict[str, str]:
    if isinstance(value, str):
        return {"en": value}
    if isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values()):
        return dict(value)
    raise ConfigError(f'{where}: write a string or a table like {{ ko = "...", en = "..." }}.')


def parse_items(rows: Sequence[Mapping[str, Any]], source: str) -> tuple[CatalogueItem, ...]:
    items: list[CatalogueItem] = []
    seen: set[str] = set()
    for n, row in enumerate(rows, 1):
        where = f"Catalogue {source}, item {n}"
        item_id, url = row.get("id"), row.get("url")
        if not isinstance(item_id, str) or not item_id or item_id in seen:
            raise ConfigError(f'{where}: needs a unique id = "...".')
        if not isinstance(url, str) or not url.startswith(("https://", "http://", "/")):
            raise ConfigError(f'{where} ({item_id}): needs url = "https://...".')
        tags = row.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ConfigError(f"{where} ({item_id}): tags must be a list of strings.")
        seen.add(item_id)
        items.append(
            CatalogueItem(
                id=item_id,
                title=_texts(row.get("title", item_id), f"{where} title"),
                url=url,
                tags=tuple(t.lower() for t in tags),
                description=_texts(row.get("description", ""), f"{where} description"),
            )
        )
    if not items:
        raise ConfigError(f"Catalogue {source}: has no items; add [[items]] tables (TOML) or lines (JSONL).")
    return tuple(items)


def load_catalogue(name_or_path: str, *, search: Sequence[Path] = ()) -> Catalogue:
    """A catalogue by name (``daehwa/catalogues/NAME.toml|jsonl`` or a directory in ``search``) or by path."""
    candidates = [Path(name_or_path)] if name_or_path.endswith((".toml", ".jsonl")) else []
    for directory in [*search, BUILTIN_DIR]:
        candidates += [directory / f"{name_or_path}.toml", directory / f"{name_or_path}.jsonl"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ConfigError(
            f"Catalogue {name_or_path!r} not found: put {name_or_path}.toml in daehwa/catalogues or name a file path."
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ConfigError(f"Catalogue {path}: line {exc.lineno} is not JSON ({exc.msg}).") from None
        name = path.stem
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Catalogue {path}: not valid TOML ({exc}).") from None
        rows, name = data.get("items", []), str(data.get("name") or path.stem)
    return Catalogue(name=name, items=parse_items(rows, str(path)))


@dataclass(frozen=True, slots=True)
class Pick:
    item: CatalogueItem
    score: float
    similarity: float
    tags: tuple[str, ...]  # the tags that matched the message or the interests

    def as_meta(self, catalogue: str, locale: str) -> dict[str, Any]:
        return {
            "id": self.item.id,
            "catalogue": catalogue,
            "title": self.item.text("title", locale),
            "description": self.item.text("description", locale),
            "url": self.item.url,
            "tags": list(self.item.tags),
            "score": round(self.score, 3),
        }


def words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def pick(
    catalogue: Catalogue,
    *,
    query_vector: Sequence[float] | None,
    text: str,
    interests: Sequence[str] = (),
    feedback: Mapping[str, FeedbackRecord] | None = None,
    limit: int = 2,
    min_score: float = 0.05,
    min_relevance: float = 0.03,
) -> list[Pick]:
    """Rank the catalogue for one message (see the module docstring); pure CPU, no model call."""
    import numpy as np

    feedback = feedback or {}
    said = words(text)
    liked = {t.lower() for term in interests for t in [term, *term.split(" ")]}
    sims = (
        np.asarray(catalogue.vectors) @ np.asarray(query_vector, dtype=np.float32)
        if query_vector is not None and catalogue.vectors is not None
        else np.zeros(len(catalogue.items), dtype=np.float32)
    )
    mean = float(sims.mean()) if len(sims) else 0.0
    picks: list[Pick] = []
    for item, sim in zip(catalogue.items, sims.tolist(), strict=True):
        fb = feedback.get(item.id)
        if fb is not None and fb.dismissed:
            continue
        in_text = tuple(t for t in item.tags if t in said or (len(t) >= 2 and t in text.lower()))
        in_interests = tuple(t for t in item.tags if t in liked and t not in in_text)
        relevance = (float(sim) - mean) + 0.04 * len(in_text)
        if relevance < min_relevance:  # interests and clicks raise a relevant item, never make one relevant
            continue
        score = relevance + 0.03 * len(in_interests)
        if fb is not None and fb.clicks:
            score += 0.02 * math.log1p(fb.clicks)
        if score >= min_score:
            picks.append(Pick(item, score, float(sim), in_text + in_interests))
    picks.sort(key=lambda p: -p.score)
    return picks[:limit]


def suggestion_sentence(picks: Sequence[Pick], locale: str) -> str:
    titles = ", ".join(f"'{p.item.text('title', locale)}'" for p in picks)
    if locale == "ko":
        return (
            f"대화에 어울린다면 답변 끝에 한 문장으로 자연스럽게 관련 자료({titles})를 권할 수 있습니다"
            " (예: '파이썬 최적화에 관심 있으시면 관련 자료를 추천드릴까요?'). 링크는 화면에 카드로 따로 보입니다."
        )
    return (
        f"If it fits the conversation, you may end with one natural sentence offering related material ({titles}),"
        " e.g. 'If you're into Python performance, shall I suggest a guide?'. Links are shown separately as cards."
    )
