"""Values for a form's fields from a free answer: the deterministic parsers first, the model when they are not sure.

The parsers (``parsers``) read dates, times, counts, phones and emails in every answer, for every field, so one
sentence can fill several ("내일 저녁 7시에 두 명이요"). Spans a typed value took are masked before the counts and the
free text are read, so "12월 24일" is never also "24 people" and a name answer "김민수, 010-1234-5678" keeps only the
name. When the field just asked gets nothing sure, and the form allows it, the model is asked for that one field
with a JSON schema (``response_format`` ``json_schema``, where the provider takes it) within a time bound; its value
is read by the same parsers and validated by the same rules. A sure parser reading always wins over the model's.
A model failure or timeout is logged, counted (``daehwa_form_extract_failures_total``) and ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

from ..types import ChatMessage, GenerationParams, TextDelta
from . import parsers
from .forms import Candidate, FieldSpec, FormSpec, FormState, coerce, localized, parse_value

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..routing import Router

log = logging.getLogger(__name__)

#: Fields read before the others, whose spans are then masked.
_TYPED_FIRST = ("date", "time", "phone", "email")
_MODEL_MAX_TOKENS = 48
_INSTEAD = re.compile(r"(?:말고|아니고|아니라|대신에?|instead of|rather than)\s*", re.I)


def parse_answer(spec: FormSpec, state: FormState | None, answer: str, today: date) -> dict[str, Candidate]:
    """Every field's value the parsers find in ``answer``; bare answers ("2", "김민수") count for the asked field."""
    asking = state.asking if state is not None else None
    out: dict[str, Candidate] = {}
    masked = answer
    instead = _INSTEAD.search(answer)
    if instead:  # "금요일 말고 토요일": only what follows is meant
        masked = " " * instead.end() + answer[instead.end() :]
    for kind in _TYPED_FIRST:
        for f in spec.fields:
            if f.type != kind:
                continue
            found, span = _typed(f, masked, today)
            if found is not None:
                out[f.name] = found
            if span is not None:
                masked = masked[: span[0]] + " " * (span[1] - span[0]) + masked[span[1] :]
    for f in spec.fields:
        if f.type in _TYPED_FIRST:
            continue
        pending = f.name == asking
        if f.type == "text" and not pending:
            continue
        found = parse_value(f, masked if f.type != "choice" else answer, today, pending=pending)
        if found is not None and not (f.type == "text" and not found.value):
            out[f.name] = found
    return out


def _typed(f: FieldSpec, text: str, today: date) -> tuple[Candidate | None, tuple[int, int] | None]:
    result: parsers.Parsed[Any] | parsers.Rejected | None
    if f.type == "date":
        result = parsers.parse_date(text, today)
    elif f.type == "time":
        result = parsers.parse_time(text)
    elif f.type == "phone":
        result = parsers.parse_phone(text)
    else:
        result = parsers.parse_email(text)
    if result is None:
        return None, None
    span = result.span if result.span != (0, 0) else None
    found = parse_value(f, text, today, pending=True)
    return found, span


def _schema(f: FieldSpec) -> dict[str, Any]:
    hint = {
        "date": "the date as YYYY-MM-DD",
        "time": "the time of day as HH:MM, 24-hour",
        "number": "the number in digits",
        "phone": "the phone number in digits",
        "email": "the email address",
        "choice": "one of: " + ", ".join(c.value for c in f.choices),
        "text": "the value exactly as the user gave it, without surrounding words",
    }[f.type]
    return {
        "name": f"form_{f.name}",
        "schema": {
            "type": "object",
            "properties": {"value": {"type": ["string", "null"], "description": hint}},
            "required": ["value"],
            "additionalProperties": False,
        },
    }


class Extractor:
    """Parsers plus, where they are not sure, one bounded model call for the field just asked."""

    def __init__(self, router: Router | None, metrics: Metrics | None = None) -> None:
        self.router = router
        self.metrics = metrics

    def model_takes_schema(self, model: str) -> bool:
        """Whether ``model``'s provider accepts ``response_format`` (json_schema) at all."""
        if self.router is None:
            return False
        try:
            provider, _ = self.router.providers.resolve(model)
        except Exception:
            return False
        return "response_format" in provider.supported_params and "response_format" not in set(
            provider.config.unsupported_params
        )

    async def extract(
        self, spec: FormSpec, state: FormState | None, answer: str, today: date, *, model: str | None
    ) -> dict[str, Candidate]:
        found = parse_answer(spec, state, answer, today)
        asking = state.asking if state is not None else None
        if asking is None or model is None or not spec.extract_with_model:
            return found
        mine = found.get(asking)
        if mine is not None and (mine.sure or mine.rejected is not None):
            return found  # the parser is sure (or sure it is invalid): it wins
        f = spec.field(asking)
        if f.type == "text" and mine is not None and len(answer) <= 40:
            return found
        if (not f.required and parsers.is_skip(answer)) or parsers.is_cancel(answer):
            return found  # "없어요", "취소": nothing to extract
        if not self.model_takes_schema(model):
            return found
        try:
            raw = await asyncio.wait_for(self._ask_model(f, answer, today, model), spec.extract_timeout_seconds)
        except Exception as exc:  # TimeoutError, provider errors, bad JSON: the parsers' reading stands
            self._failed(exc)
            return found
        value = coerce(f, raw, today)
        if value is not None:
            found[asking] = value
        return found

    async def _ask_model(self, f: FieldSpec, answer: str, today: date, model: str) -> Any:
        assert self.router is not None
        question = localized(f.prompt, "en") or f.name
        system = (
            "You extract one value from a user's answer to a form question and reply with JSON only. "
            f"Today is {today.isoformat()} ({today.strftime('%A')}). The field is {localized(f.label, 'en')!r}. "
            'Reply {"value": null} if the answer does not give it.'
        )
        messages = [
            ChatMessage("system", system),
            ChatMessage("user", f"Question: {question}\nAnswer: {answer}"),
        ]
        params = GenerationParams(
            max_tokens=_MODEL_MAX_TOKENS,
            temperature=0.0,
            response_format={"type": "json_schema", "json_schema": _schema(f)},
        )
        parts: list[str] = []
        async for event in self.router.stream([model], messages, params):
            if isinstance(event, TextDelta):
                parts.append(event.text)
        doc = json.loads("".join(parts))
        if not isinstance(doc, Mapping):
            raise ValueError("the model's JSON is not an object")
        return doc.get("value")

    def _failed(self, exc: BaseException) -> None:
        log.warning("form extraction by the model failed: %s", exc or type(exc).__name__)
        if self.metrics is not None:
            self.metrics.form_extract_failures.inc()
