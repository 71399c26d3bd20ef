"""daehwa (대화): a self-hosted LLM chat service."""

from __future__ import annotations

__version__ = "0.1.0"
