"""JSON shapes that the server sends and the client reads alike, declared once (standard library only).

``daehwa.client`` builds its records on them without importing the server; ``api/schemas.py`` uses them as response
models (pydantic reads a dataclass like a model, so /openapi.json shows the same schema).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


# No docstring: pydantic would put it into the schema as a description.
@dataclass(frozen=True, slots=True)
class ConversationOut:
    id: str
    title: str
    persona: str | None
    model: str | None
    kind: str
    created_at: str | None
    updated_at: str | None
    variables: dict[str, Any]
