"""Step-by-step information collection: a persona's form and the state machine that fills it.

A persona's ``[form]`` table (``parse_form``) names ordered fields, each with a type (text, number, date, time,
choice, phone, email), whether it is required, its limits and its prompt in Korean and English. The machine
(``FormMachine.advance``) is pure: given the state, the user's answer and the candidate values the extractor found,
it returns the next state and the reply text, which is deterministic so that even a small local model's form works:

    collecting --(every field answered or skipped)--> confirming --(yes)--> done
        ^  asks the next missing field, one at a time      |  (no / a field name / "인원 3명으로 바꿔 주세요")
        +--------------------------------------------------+
    any state --("취소")--> cancelled;  done / cancelled --("새 예약")--> collecting

An invalid value is re-asked with the reason ("12월 32일: 그런 날짜는 없어요"); a correction ("날짜는 금요일로 바꿔
주세요") can come at any time. The state is a JSON document kept in the conversation's meta under ``"form"``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, time, timedelta
from typing import Any, Literal

from ..errors import ConfigError
from ..i18n import load_texts
from . import parsers
from .parsers import Parsed, Rejected

FieldType = Literal["text", "number", "date", "time", "choice", "phone", "email"]
FIELD_TYPES: tuple[str, ...] = ("text", "number", "date", "time", "choice", "phone", "email")
Status = Literal["collecting", "confirming", "done", "cancelled"]
META_KEY = "form"

_WEEKDAYS = {"ko": "월화수목금토일", "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")}

#: The machine's own sentences (``forms.toml``); ``{...}`` fields are filled in.
TEXTS: dict[str, dict[str, str]] = load_texts("daehwa.intelligence", "forms.toml")
#: Why a value breaks the field's limits, by the key ``validate`` returns (``form_reasons.toml``).
_VALUE_REASONS: dict[str, dict[str, str]] = load_texts("daehwa.intelligence", "form_reasons.toml")


def _final(word: str) -> int | None:
    """The final consonant index of the word's last Hangul syllable (0: none), None for a non-Hangul ending."""
    word = word.strip().rstrip(")]").strip()
    last = word[-1:]
    if "가" <= last <= "힣":
        return (ord(last) - 0xAC00) % 28
    if last.isdigit():
        return {"0": 17, "1": 8, "2": 0, "3": 17, "4": 0, "5": 0, "6": 1, "7": 8, "8": 8, "9": 0}[last]
    return None


def particles(word: str) -> dict[str, str]:
    """The Korean particles that follow ``word``: 을/를 (``eul``) and 으로/로 (``ro``)."""
    final = _final(word)
    return {
        "eul": "을(를)" if final is None else ("을" if final else "를"),
        "ro": "(으)로" if final is None else ("으로" if final not in (0, 8) else "로"),
    }


def localized(texts: Mapping[str, str], locale: str) -> str:
    return texts.get(locale) or texts.get("ko") or texts.get("en") or next(iter(texts.values()), "")


@dataclass(frozen=True, slots=True)
class Choice:
    value: str
    labels: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    def words(self) -> tuple[str, ...]:
        return (*self.labels.values(), *self.aliases)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a form, as the persona file declares it."""

    name: str
    type: FieldType
    label: Mapping[str, str]
    prompt: Mapping[str, str]
    required: bool = True
    choices: tuple[Choice, ...] = ()
    minimum: float | None = None  # number
    maximum: float | None = None
    earliest: time | None = None  # time
    latest: time | None = None
    future: bool = True  # date: no past days
    max_days_ahead: int | None = None
    min_length: int = 1  # text
    max_length: int = 200
    pattern: str | None = None  # text: a regular expression the whole value must match
    name_like: bool = False  # text: strip "제 이름은 ...입니다"
    unit: Mapping[str, str] = field(default_factory=dict)  # number: shown after the value ("명")
    words: tuple[str, ...] = ()  # extra words that name the field in a correction ("인원", "몇 명")

    def mentions(self, text: str) -> bool:
        """Whether the text names this field ("날짜를 바꿔 주세요", "change the time")."""
        folded = text.casefold()
        return any(w.casefold() in folded for w in (*self.label.values(), *self.words, self.name) if w)


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    retries: int = 3
    timeout_seconds: float = 5.0
    backoff_seconds: float = 0.5


@dataclass(frozen=True, slots=True)
class FormSpec:
    name: str
    fields: tuple[FieldSpec, ...]
    title: Mapping[str, str] = field(default_factory=dict)
    done: Mapping[str, str] = field(default_factory=dict)  # completion message template ({record_id}, {summary})
    webhook: Webhook | None = None
    extract_with_model: bool = True  # ask the model when the parsers find nothing sure
    extract_timeout_seconds: float = 1.5

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


# -- the persona file's [form] table -----------------------------------------------------------------------------
_FORM_KEYS = {"name", "title", "done", "webhook", "fields", "extract_with_model", "extract_timeout_seconds"}
_FIELD_KEYS = {
    "name", "type", "label", "prompt", "required", "choices", "min", "max", "future", "max_days_ahead",
    "min_length", "max_length", "pattern", "name_like", "unit", "words",
}  # fmt: skip


def _texts(value: Any, what: str, fail: Any) -> dict[str, str]:
    if isinstance(value, str):
        return {"ko": value, "en": value}
    if isinstance(value, Mapping) and value and all(isinstance(v, str) for v in value.values()):
        return {str(k): v for k, v in value.items()}
    raise fail(f'{what} must be a string or a table {{ ko = "...", en = "..." }}.')


def _clock(value: Any, what: str, fail: Any) -> time:
    try:
        hour, minute = str(value).split(":")
        return time(int(hour), int(minute))
    except ValueError:
        raise fail(f'{what} must be a time "HH:MM" such as "11:00".') from None


def parse_form(data: Any, source: str) -> FormSpec:
    """A ``FormSpec`` from a persona's ``[form]`` table; every problem is a ConfigError naming the fix."""

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"Persona file {source}: [form] {msg}")

    if not isinstance(data, Mapping):
        raise fail("must be a table with name and [[form.fields]].")
    unknown = set(data) - _FORM_KEYS
    if unknown:
        raise fail(f"unknown keys {sorted(unknown)}; known keys: {sorted(_FORM_KEYS)}.")
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise fail("needs at least one [[form.fields]] table.")
    fields: list[FieldSpec] = []
    for i, table in enumerate(raw_fields):
        if not isinstance(table, Mapping):
            raise fail(f"fields[{i}] must be a table.")
        fields.append(_parse_field(table, i, fail))
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise fail(f"field names must be unique; got {names}.")
    webhook = None
    if data.get("webhook") is not None:
        hook = data["webhook"]
        if isinstance(hook, str):
            hook = {"url": hook}
        if not isinstance(hook, Mapping) or not str(hook.get("url", "")).startswith(("http://", "https://")):
            raise fail('webhook must be a URL "https://..." or a table { url = "https://...", retries = 3 }.')
        webhook = Webhook(
            url=str(hook["url"]),
            retries=int(hook.get("retries", 3)),
            timeout_seconds=float(hook.get("timeout_seconds", 5.0)),
            backoff_seconds=float(hook.get("backoff_seconds", 0.5)),
        )
    return FormSpec(
        name=str(data.get("name") or "form"),
        fields=tuple(fields),
        title=_texts(data["title"], "title", fail) if "title" in data else {},
        done=_texts(data["done"], "done", fail) if "done" in data else {},
        webhook=webhook,
        extract_with_model=bool(data.get("extract_with_model", True)),
        extract_timeout_seconds=float(data.get("extract_timeout_seconds", 1.5)),
    )


def _parse_field(table: Mapping[str, Any], i: int, fail: Any) -> FieldSpec:
    unknown = set(table) - _FIELD_KEYS
    if unknown:
        raise fail(f"fields[{i}]: unknown keys {sorted(unknown)}; known keys: {sorted(_FIELD_KEYS)}.")
    name = table.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise fail(f'fields[{i}] needs name = "snake_case_name".')
    kind = table.get("type", "text")
    if kind not in FIELD_TYPES:
        raise fail(f"field {name}: type must be one of {', '.join(FIELD_TYPES)}; got {kind!r}.")
    if "prompt" not in table:
        raise fail(f'field {name} needs prompt = {{ ko = "...", en = "..." }}.')
    choices: list[Choice] = []
    for c in table.get("choices", ()):
        if isinstance(c, str):
            choices.append(Choice(c, {"ko": c, "en": c}))
        elif isinstance(c, Mapping) and isinstance(c.get("value"), str):
            labels = {k: str(v) for k, v in c.items() if k in ("ko", "en")} or {"ko": c["value"], "en": c["value"]}
            choices.append(Choice(c["value"], labels, tuple(str(a) for a in c.get("aliases", ()))))
        else:
            raise fail(f'field {name}: choices are strings or tables {{ value = "...", ko = "...", en = "..." }}.')
    if kind == "choice" and not choices:
        raise fail(f"field {name} has type choice but no choices = [...].")
    lo, hi = table.get("min"), table.get("max")
    spec = FieldSpec(
        name=name,
        type=kind,
        label=_texts(table.get("label", name), f"field {name}: label", fail),
        prompt=_texts(table["prompt"], f"field {name}: prompt", fail),
        required=bool(table.get("required", True)),
        choices=tuple(choices),
        future=bool(table.get("future", True)),
        max_days_ahead=table.get("max_days_ahead"),
        min_length=int(table.get("min_length", 1)),
        max_length=int(table.get("max_length", 200)),
        pattern=table.get("pattern"),
        name_like=bool(table.get("name_like", False)),
        unit=_texts(table["unit"], f"field {name}: unit", fail) if "unit" in table else {},
        words=tuple(str(w) for w in table.get("words", ())),
    )
    if kind == "time":
        spec = replace(
            spec,
            earliest=_clock(lo, f"field {name}: min", fail) if lo is not None else None,
            latest=_clock(hi, f"field {name}: max", fail) if hi is not None else None,
        )
    elif kind == "number":
        spec = replace(spec, minimum=None if lo is None else float(lo), maximum=None if hi is None else float(hi))
    if spec.pattern is not None:
        try:
            re.compile(spec.pattern)
        except re.error as exc:
            raise fail(f"field {name}: pattern is not a regular expression ({exc}).") from None
    return spec


# -- values ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Candidate:
    """A value the extractor found for a field: a typed value, or a rejection with its reason key."""

    value: Any = None
    sure: bool = True
    source: str = "parser"  # "parser" | "model"
    rejected: str | None = None  # a key of parsers.REASONS


def parse_value(spec: FieldSpec, text: str, today: date, *, pending: bool) -> Candidate | None:
    """Read a value of ``spec`` in ``text``; ``pending`` when the field was just asked (bare answers count)."""
    result: Parsed[Any] | Rejected | None
    if spec.type == "date":
        result = parsers.parse_date(text, today)
    elif spec.type == "time":
        result = parsers.parse_time(text)
        if isinstance(result, Parsed) and not result.sure:
            result = Parsed(parsers.resolve_hour(result.value, spec.earliest, spec.latest), result.span, True)
    elif spec.type == "number":
        counters = tuple(spec.unit.values()) + parsers.PEOPLE_COUNTERS if spec.unit else ()
        result = parsers.parse_number(text, counters=counters or (), bare=pending)
    elif spec.type == "phone":
        result = parsers.parse_phone(text)
    elif spec.type == "email":
        result = parsers.parse_email(text)
    elif spec.type == "choice":
        result = parsers.parse_choice(text, [(c.value, c.words()) for c in spec.choices])
    else:
        if not pending:
            return None
        value = parsers.parse_text(text, name_like=spec.name_like)
        return Candidate(value, sure=bool(value) and len(value) <= min(spec.max_length, 40)) if value else None
    if result is None:
        return None
    if isinstance(result, Rejected):
        return Candidate(rejected=result.reason)
    return Candidate(result.value, sure=result.sure)


def coerce(spec: FieldSpec, raw: Any, today: date) -> Candidate | None:
    """A model's raw value for ``spec`` made typed: "2026-12-24" -> date, "19:00" -> time, "3" -> 3."""
    if raw is None or raw == "":
        return None
    text = str(raw).strip()
    if spec.type == "text":
        return Candidate(text, source="model")
    if spec.type == "number" and isinstance(raw, int | float) and not isinstance(raw, bool):
        return Candidate(int(raw), source="model")
    found = parse_value(spec, text, today, pending=True)
    if found is None:
        return None
    return replace(found, source="model")


def validate(spec: FieldSpec, value: Any, today: date) -> str | None:
    """The reason key (of ``_VALUE_REASONS``) why ``value`` is not acceptable for ``spec``, or None."""
    if spec.type == "date":
        if spec.future and value < today:
            return "past_date"
        if spec.max_days_ahead is not None and value > today + timedelta(days=spec.max_days_ahead):
            return "too_far"
    elif spec.type == "time":
        if spec.earliest is not None and value < spec.earliest:
            return "too_early"
        if spec.latest is not None and value > spec.latest:
            return "too_late"
    elif spec.type == "number":
        if spec.minimum is not None and value < spec.minimum:
            return "too_small"
        if spec.maximum is not None and value > spec.maximum:
            return "too_large"
    elif spec.type == "choice":
        if value not in {c.value for c in spec.choices}:
            return "not_a_choice"
    elif spec.type == "text":
        if len(value) < spec.min_length:
            return "too_short"
        if len(value) > spec.max_length:
            return "too_long"
        if spec.pattern and not re.fullmatch(spec.pattern, value):
            return "pattern"
    return None


def to_json(spec: FieldSpec, value: Any) -> Any:
    if spec.type == "date":
        return value.isoformat()
    if spec.type == "time":
        return value.strftime("%H:%M")
    return value


def from_json(spec: FieldSpec, value: Any) -> Any:
    if spec.type == "date":
        return date.fromisoformat(value)
    if spec.type == "time":
        return time.fromisoformat(value)
    return value


def display(spec: FieldSpec, value: Any, locale: str) -> str:
    """A stored (JSON) value as the user reads it: "12월 24일 (목)", "오후 7:00", "2명"."""
    if value is None:
        return localized(TEXTS["empty"], locale)
    if spec.type == "date":
        d = date.fromisoformat(value)
        if locale == "ko":
            return f"{d.month}월 {d.day}일 ({_WEEKDAYS['ko'][d.weekday()]})"
        return f"{_WEEKDAYS['en'][d.weekday()]} {d.strftime('%b')} {d.day}"
    if spec.type == "time":
        t = time.fromisoformat(value)
        if locale == "ko":
            half = "오전" if t.hour < 12 else "오후"
            hour = t.hour % 12 or 12
            return f"{half} {hour}시" + (f" {t.minute}분" if t.minute else "")
        return t.strftime("%I:%M %p").lstrip("0")
    if spec.type == "number":
        number = int(value) if float(value).is_integer() else value
        return f"{number}{localized(spec.unit, locale)}" if spec.unit else str(number)
    if spec.type == "choice":
        for c in spec.choices:
            if c.value == value:
                return localized(c.labels, locale)
    return str(value)


def reason_text(key: str, spec: FieldSpec, locale: str) -> str:
    if key in parsers.REASONS:
        return localized(parsers.REASONS[key], locale)
    template = localized(_VALUE_REASONS.get(key, {"ko": key, "en": key}), locale)
    choices = ", ".join(localized(c.labels, locale) for c in spec.choices)
    lo = spec.earliest.strftime("%H:%M") if spec.earliest else spec.minimum
    hi = spec.latest.strftime("%H:%M") if spec.latest else spec.maximum
    number = lambda v: int(v) if isinstance(v, float) and v.is_integer() else v  # noqa: E731
    return template.format(
        min=number(lo), max=number(hi), min_length=spec.min_length, max_length=spec.max_length,
        max_days=spec.max_days_ahead, choices=choices,
    )  # fmt: skip


# -- the state ---------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class FormState:
    """Where a conversation's form is; ``values`` hold JSON values (dates as ISO text)."""

    form: str
    status: Status = "collecting"
    values: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    asking: str | None = None  # the field last asked for
    locale: str = "ko"
    record_id: str | None = None
    delivery: str | None = None  # the webhook: "pending", "delivered", "failed"; None without one

    def to_meta(self) -> dict[str, Any]:
        return {
            "form": self.form, "status": self.status, "values": dict(self.values), "skipped": list(self.skipped),
            "asking": self.asking, "locale": self.locale, "record_id": self.record_id, "delivery": self.delivery,
        }  # fmt: skip

    @classmethod
    def from_meta(cls, meta: Any, spec: FormSpec) -> FormState | None:
        """The stored state if it is of this form; None for none (or another form's: the persona's file changed)."""
        if not isinstance(meta, Mapping) or meta.get("form") != spec.name:
            return None
        known = {f.name for f in spec.fields}
        status = meta.get("status")
        return cls(
            form=spec.name,
            status=status if status in ("collecting", "confirming", "done", "cancelled") else "collecting",
            values={k: v for k, v in (meta.get("values") or {}).items() if k in known},
            skipped=[k for k in meta.get("skipped") or [] if k in known],
            asking=meta.get("asking") if meta.get("asking") in known else None,
            locale=str(meta.get("locale") or "ko"),
            record_id=meta.get("record_id"),
            delivery=meta.get("delivery"),
        )


@dataclass(frozen=True, slots=True)
class Step:
    """What one answer did: the new state, the reply to send (None: let the model answer), and whether the form
    was completed by this answer (the caller then stores the record)."""

    state: FormState
    reply: str | None
    completed: bool = False
    errors: Mapping[str, str] = field(default_factory=dict)  # field -> reason key, for metrics and tests


def detect_locale(text: str, fallback: str) -> str:
    if re.search(r"[가-힣]", text):
        return "ko"
    if re.search(r"[A-Za-z]{2,}", text):
        return "en"
    return fallback


class FormMachine:
    """The form's conversation: pure functions of (state, answer, candidates)."""

    def __init__(self, spec: FormSpec) -> None:
        self.spec = spec

    def start(self, locale: str = "ko") -> FormState:
        """A fresh state; the first field counts as asked (the persona's first message invites it)."""
        return FormState(form=self.spec.name, locale=locale, asking=self.spec.fields[0].name)

    def next_field(self, state: FormState) -> FieldSpec | None:
        for f in self.spec.fields:
            if f.name not in state.values and f.name not in state.skipped:
                return f
        return None

    def question(self, state: FormState) -> str:
        """What the form says now, without an answer (a regenerated reply, the form's first turn)."""
        if state.status == "confirming":
            return self._confirm(state)
        if state.status in ("done", "cancelled"):
            return ""
        nxt = self.next_field(state)
        return self._ask(nxt, state.locale) if nxt is not None else self._confirm(state)

    def summary(self, state: FormState, locale: str | None = None) -> str:
        loc = locale or state.locale
        lines = []
        for f in self.spec.fields:
            if f.name in state.values or not f.required:
                lines.append(f"- {localized(f.label, loc)}: {display(f, state.values.get(f.name), loc)}")
        return "\n".join(lines)

    def advance(self, state: FormState, answer: str, candidates: Mapping[str, Candidate], today: date) -> Step:
        state = FormState(**state.to_meta())  # never change the caller's copy
        state.locale = detect_locale(answer, state.locale)
        loc = state.locale
        if state.status in ("done", "cancelled"):
            if parsers.is_restart(answer):
                fresh = self.start(loc)
                return self._collect(fresh, answer, candidates, today, prefix="")
            return Step(state, None)
        if parsers.is_cancel(answer) and not candidates_with_values(candidates):
            state.status, state.asking = "cancelled", None
            return Step(state, localized(TEXTS["cancelled"], loc))
        if state.status == "confirming":
            return self._confirming(state, answer, candidates, today)
        return self._collect(state, answer, candidates, today, prefix="")

    # -- states --------------------------------------------------------------------------------------------------
    def _collect(
        self, state: FormState, answer: str, candidates: Mapping[str, Candidate], today: date, *, prefix: str
    ) -> Step:
        loc = state.locale
        asked = self.spec.field(state.asking) if state.asking else None
        noted, errors = self._apply(state, answer, candidates, today)
        parts = [prefix] if prefix else []
        if noted:
            parts.append(localized(TEXTS["noted"], loc).format(items=", ".join(noted), **particles(noted[-1])))
        for name, reason in errors.items():
            spec = self.spec.field(name)
            parts.append(
                localized(TEXTS["invalid"], loc).format(
                    label=localized(spec.label, loc), reason=reason_text(reason, spec, loc)
                )
            )
        if asked is not None and asked.name not in state.values and asked.name not in errors:
            if not asked.required and parsers.is_skip(answer):
                state.skipped.append(asked.name)
            elif not noted:
                parts.append(
                    localized(TEXTS["not_understood"], loc).format(
                        label=localized(asked.label, loc), **particles(localized(asked.label, loc))
                    )
                )
        nxt = self._first_error_field(errors) or self.next_field(state)
        if nxt is None:
            state.status, state.asking = "confirming", None
            parts.append(self._confirm(state))
        else:
            state.asking = nxt.name
            parts.append(self._ask(nxt, loc))
        return Step(state, "".join(parts).strip(), errors=errors)

    def _confirming(self, state: FormState, answer: str, candidates: Mapping[str, Candidate], today: date) -> Step:
        loc = state.locale
        if state.asking is not None or candidates_with_values(candidates):
            # A field being edited, or a correction with its value ("인원 3명으로 바꿔 주세요").
            editing = state.asking
            noted, errors = self._apply(state, answer, candidates, today, overwrite=True)
            if errors or (editing and editing not in state.values and not noted):
                return self._reask(state, editing, errors)
            state.asking = None
            lead = (
                localized(TEXTS["noted"], loc).format(items=", ".join(noted), **particles(noted[-1])) if noted else ""
            )
            return Step(state, (lead + self._confirm(state)).strip())
        if parsers.is_yes(answer):
            state.status, state.asking = "done", None
            return Step(state, None, completed=True)
        named = [f for f in self.spec.fields if f.mentions(answer)]
        if len(named) == 1:
            state.asking = named[0].name
            return Step(state, self._ask(named[0], loc))
        labels = ", ".join(localized(f.label, loc) for f in self.spec.fields)
        if parsers.is_no(answer) or parsers.is_correction(answer):
            return Step(state, localized(TEXTS["which_field"], loc).format(labels=labels))
        return Step(state, self._confirm(state))

    def _reask(self, state: FormState, editing: str | None, errors: Mapping[str, str]) -> Step:
        loc = state.locale
        parts = []
        for name, reason in errors.items():
            spec = self.spec.field(name)
            parts.append(
                localized(TEXTS["invalid"], loc).format(
                    label=localized(spec.label, loc), reason=reason_text(reason, spec, loc)
                )
            )
        target = self._first_error_field(errors) or (self.spec.field(editing) if editing else None)
        if target is None:
            return Step(state, "".join(parts) + self._confirm(state), errors=errors)
        if not errors:
            parts.append(
                localized(TEXTS["not_understood"], loc).format(
                    label=localized(target.label, loc), **particles(localized(target.label, loc))
                )
            )
        state.asking = target.name
        return Step(state, ("".join(parts) + self._ask(target, loc)).strip(), errors=errors)

    # -- helpers -------------------------------------------------------------------------------------------------
    def _apply(
        self,
        state: FormState,
        answer: str,
        candidates: Mapping[str, Candidate],
        today: date,
        *,
        overwrite: bool = False,
    ) -> tuple[list[str], dict[str, str]]:
        """Store the acceptable candidates; return what was noted (for the reply) and the rejected fields."""
        loc = state.locale
        noted: list[str] = []
        errors: dict[str, str] = {}
        correcting = overwrite or parsers.is_correction(answer)
        for spec in self.spec.fields:
            cand = candidates.get(spec.name)
            if cand is None:
                continue
            is_asked = spec.name == state.asking
            already = spec.name in state.values
            if already and not (is_asked or correcting or spec.mentions(answer)):
                continue  # a date in an answer about something else does not silently replace the one given
            if cand.rejected is not None:
                errors[spec.name] = cand.rejected
                continue
            reason = validate(spec, cand.value, today)
            if reason is not None:
                errors[spec.name] = reason
                continue
            value = to_json(spec, cand.value)
            state.values[spec.name] = value
            if spec.name in state.skipped:
                state.skipped.remove(spec.name)
            noted.append(f"{localized(spec.label, loc)} {display(spec, value, loc)}")
        return noted, errors

    def _first_error_field(self, errors: Mapping[str, str]) -> FieldSpec | None:
        for f in self.spec.fields:
            if f.name in errors:
                return f
        return None

    def _ask(self, spec: FieldSpec, locale: str) -> str:
        hint = "" if spec.required else localized(TEXTS["skip_hint"], locale)
        return localized(spec.prompt, locale) + hint

    def _confirm(self, state: FormState) -> str:
        return localized(TEXTS["confirm"], state.locale).format(summary=self.summary(state))

    def completion(self, state: FormState) -> str:
        """The reply once the record is stored (``state.record_id`` set)."""
        template = localized(self.spec.done or TEXTS["done"], state.locale)
        return template.format(record_id=state.record_id or "", summary=self.summary(state)).strip()


def candidates_with_values(candidates: Mapping[str, Candidate]) -> bool:
    return any(c.rejected is None and c.value is not None for c in candidates.values())


def progress(spec: FormSpec, state: FormState | None, locale: str) -> dict[str, Any]:
    """The form's progress as the API shows it (``GET /api/conversations/{id}/form``)."""
    machine = FormMachine(spec)
    current = state or machine.start(locale)
    nxt = None
    if current.status == "collecting":
        nxt = current.asking or (f.name if (f := machine.next_field(current)) else None)
    fields = [
        {
            "name": f.name,
            "type": f.type,
            "label": localized(f.label, locale),
            "required": f.required,
            "value": current.values.get(f.name),
            "display": display(f, current.values[f.name], locale) if f.name in current.values else None,
            "skipped": f.name in current.skipped,
        }
        for f in spec.fields
    ]
    filled = sum(1 for f in spec.fields if f.name in current.values or f.name in current.skipped)
    return {
        "form": spec.name,
        "title": localized(spec.title, locale) if spec.title else spec.name,
        "status": current.status,
        "started": state is not None,
        "fields": fields,
        "filled": filled,
        "total": len(spec.fields),
        "next": nxt,
        "done": current.status == "done",
        "record_id": current.record_id,
        "delivery": current.delivery,
    }


def today_in(tz_offset_hours: float = 9.0) -> date:
    """Today where the form's users are (Korea by default); relative dates ("내일") are read from it."""
    from datetime import UTC, datetime

    return (datetime.now(UTC) + timedelta(hours=tz_offset_hours)).date()


__all__: Sequence[str] = (
    "Candidate", "FieldSpec", "FormMachine", "FormSpec", "FormState", "Step", "Webhook", "parse_form", "progress",
)  # fmt: skip
