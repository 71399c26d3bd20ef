"""Personas: a system-prompt template with variables, an optional first message, and per-persona model settings.

A persona is one TOML file. The built-in ones live in ``builtin/``; files in ``DAEHWA_PERSONAS_DIR`` add to them and
may replace one by using the same ``name``. Templates use ``{variable}`` fields (``{{`` for a literal brace); every
field must be a declared variable or a built-in one (``today``, ``user_name``), checked when the file is loaded.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..context.policy import ContextPolicy
from ..errors import ConfigError, InvalidRequest, NotFound
from ..intelligence.forms import FormSpec, parse_form
from ..moderation.base import Action, ModerationPolicy
from ..types import GenerationParams

BUILTIN_VARIABLES = frozenset({"today", "user_name"})
_ACTIONS = ("block", "mask", "flag", "off")
_KEYS = {
    "name",
    "title",
    "description",
    "system",
    "first_message",
    "model",
    "fallback_models",
    "temperature",
    "top_p",
    "max_tokens",
    "allow_anonymous",
    "moderation_input",
    "moderation_output",
    "variables",
    "context",
    "context_recent_messages",
    "form",
}


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    default: str | None = None
    description: str = ""
    choices: tuple[str, ...] = ()
    max_length: int = 200


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    system: str
    title: Mapping[str, str] = field(default_factory=dict)
    description: Mapping[str, str] = field(default_factory=dict)
    first_message: str | None = None
    model: str | None = None
    fallback_models: tuple[str, ...] = ()
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    allow_anonymous: bool = False
    moderation_input: Action | None = None
    moderation_output: Action | None = None
    variables: Mapping[str, Variable] = field(default_factory=dict)
    source: str = ""
    context: str | None = None  # context policy, e.g. "recent" (default: DAEHWA_CONTEXT_POLICY)
    context_recent_messages: int | None = None
    # -- forms (daehwa.intelligence.forms): the [form] table, collected step by step --------------------------
    form: FormSpec | None = None

    def context_policy(self, default: ContextPolicy) -> ContextPolicy:
        """The global context policy with this persona's overrides."""
        base = (
            ContextPolicy.parse(self.context, recent_messages=default.recent_messages, recall_k=default.recall_k)
            if self.context
            else default
        )
        if self.context_recent_messages is not None:
            base = replace(base, recent_messages=self.context_recent_messages)
        return base

    def localized_title(self, locale: str) -> str:
        return self.title.get(locale[:2]) or self.title.get("en") or self.name

    def params(self) -> GenerationParams:
        """The persona's sampling defaults; request parameters override them."""
        return GenerationParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)

    def policy(self, default: ModerationPolicy) -> ModerationPolicy:
        return ModerationPolicy(
            input=self.moderation_input or default.input, output=self.moderation_output or default.output
        )

    def resolve_variables(self, given: Mapping[str, Any] | None) -> dict[str, str]:
        """Check the caller's variables against the declared ones and fill in defaults."""
        given = dict(given or {})
        unknown = set(given) - set(self.variables)
        if unknown:
            known = ", ".join(sorted(self.variables)) or "none"
            raise InvalidRequest(
                f"Persona {self.name!r} has no variable(s) {', '.join(sorted(unknown))}; its variables: {known}.",
                param="variables",
            )
        out: dict[str, str] = {}
        for var in self.variables.values():
            value = given.get(var.name, var.default)
            if value is None:
                raise InvalidRequest(
                    f"Persona {self.name!r} needs the variable {var.name!r} ({var.description}).", param="variables"
                )
            value = str(value).strip()
            if len(value) > var.max_length:
                raise InvalidRequest(
                    f"Variable {var.name!r} is longer than {var.max_length} characters.", param="variables"
                )
            if var.choices and value not in var.choices:
                raise InvalidRequest(
                    f"Variable {var.name!r} must be one of {', '.join(var.choices)}; got {value!r}.", param="variables"
                )
            out[var.name] = value
        return out

    def render_system(self, variables: Mapping[str, str], *, user_name: str = "") -> str:
        return _render(self.system, variables, user_name)

    def render_first_message(self, variables: Mapping[str, str], *, user_name: str = "") -> str | None:
        if not self.first_message:
            return None
        return _render(self.first_message, variables, user_name)


def _render(template: str, variables: Mapping[str, str], user_name: str) -> str:
    values = {"today": date.today().isoformat(), "user_name": user_name, **variables}
    return template.format_map(values).strip()


def _template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def parse_persona(data: Mapping[str, Any], source: str) -> Persona:
    """Build a persona from a parsed TOML table; every problem is a ConfigError naming the file and the fix."""

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"Persona file {source}: {msg}")

    unknown = set(data) - _KEYS
    if unknown:
        raise fail(f"unknown keys {sorted(unknown)}; known keys: {sorted(_KEYS)}.")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise fail("needs name = \"...\" (no '/').")
    system = data.get("system")
    if not isinstance(system, str) or not system.strip():
        raise fail('needs system = """...""" (the system-prompt template).')
    variables: dict[str, Variable] = {}
    for var_name, table in (data.get("variables") or {}).items():
        if not isinstance(table, dict):
            raise fail(f"[variables.{var_name}] must be a table (default, description, choices).")
        default = table.get("default")
        variables[var_name] = Variable(
            name=var_name,
            default=None if default is None else str(default),
            description=str(table.get("description", "")),
            choices=tuple(str(c) for c in table.get("choices", ())),
            max_length=int(table.get("max_length", 200)),
        )
    first_message = data.get("first_message")
    allowed = set(variables) | BUILTIN_VARIABLES
    for label, template in (("system", system), ("first_message", first_message)):
        if template is None:
            continue
        try:
            fields = _template_fields(template)
        except ValueError as exc:
            raise fail(f"{label} is not a valid template ({exc}); write {{{{ and }}}} for literal braces.") from None
        missing = fields - allowed
        if missing:
            raise fail(f"{label} uses undeclared variable(s) {sorted(missing)}: declare them under [variables.NAME].")
    context = data.get("context")
    if context is not None:
        if not isinstance(context, str):
            raise fail('context must be a string such as "summary+recall+recent" or "recent".')
        ContextPolicy.parse(context, where=f"Persona file {source}: context")
    recent = data.get("context_recent_messages")
    if recent is not None and (isinstance(recent, bool) or not isinstance(recent, int) or recent < 0):
        raise fail("context_recent_messages must be a whole number, 0 or more (0: as many as fit).")
    for key in ("moderation_input", "moderation_output"):
        if key in data and data[key] not in _ACTIONS:
            raise fail(f"{key} must be one of {', '.join(_ACTIONS)}.")
    title = data.get("title") or {}
    description = data.get("description") or {}
    if isinstance(title, str):
        title = {"en": title}
    if isinstance(description, str):
        description = {"en": description}
    return Persona(
        name=name.strip(),
        system=system,
        title=dict(title),
        description=dict(description),
        first_message=first_message,
        model=data.get("model"),
        fallback_models=tuple(data.get("fallback_models", ())),
        temperature=data.get("temperature"),
        top_p=data.get("top_p"),
        max_tokens=data.get("max_tokens"),
        allow_anonymous=bool(data.get("allow_anonymous", False)),
        moderation_input=data.get("moderation_input"),
        moderation_output=data.get("moderation_output"),
        variables=variables,
        source=source,
        context=context,
        context_recent_messages=recent,
        form=parse_form(data["form"], source) if "form" in data else None,
    )


def load_persona_file(path: Path) -> Persona:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Persona file {path} is not valid TOML: {exc}") from None
    return parse_persona(data, str(path))


class PersonaCatalog:
    """The personas an app offers: the built-in ones plus those in the user's directory."""

    def __init__(self, personas: Iterable[Persona]) -> None:
        self._personas = {p.name: p for p in personas}

    @classmethod
    def load(cls, user_dir: Path | None = None) -> PersonaCatalog:
        personas: list[Persona] = []
        builtin = files("daehwa.personas") / "builtin"
        for entry in sorted(builtin.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".toml"):
                data = tomllib.loads(entry.read_text(encoding="utf-8"))
                personas.append(parse_persona(data, f"builtin/{entry.name}"))
        if user_dir is not None:
            if not user_dir.is_dir():
                raise ConfigError(f"DAEHWA_PERSONAS_DIR={user_dir} is not a directory: create it or unset the setting.")
            personas.extend(load_persona_file(p) for p in sorted(user_dir.glob("*.toml")))
        return cls(personas)

    def get(self, name: str) -> Persona:
        persona = self._personas.get(name)
        if persona is None:
            known = ", ".join(sorted(self._personas))
            raise NotFound(f"Unknown persona {name!r}; available: {known}.", param="persona")
        return persona

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self._personas.values(), key=lambda p: p.name))

    def __contains__(self, name: object) -> bool:
        return name in self._personas
