"""Persona definitions and templates."""

from __future__ import annotations

from .persona import Persona, PersonaCatalog, Variable, load_persona_file, parse_persona

__all__ = ["Persona", "PersonaCatalog", "Variable", "load_persona_file", "parse_persona"]
