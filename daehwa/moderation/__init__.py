"""Moderation: the banned-word filter, its normalisation, policies and the reasons shown when a message is blocked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Action, Match, ModerationPolicy, ModerationResult, Moderator, NullModerator, StreamGuard
from .messages import BLOCK_REASONS, block_reason
from .wordfilter import FilterStats, WordFilter, mask_text

if TYPE_CHECKING:
    from ..config import Settings


def build_moderator(settings: Settings) -> Moderator:
    """A ``WordFilter`` over the configured lists (built even when both actions are off: a persona may turn it on)."""
    return WordFilter(
        settings.filter_word_files,
        settings.filter_allow_files,
        builtin=settings.filter_builtin_list,
        cache_dir=settings.data_dir / "filter-cache",  # compiled lists: a restart with unchanged lists skips the build
    )


def policy_from_settings(settings: Settings) -> ModerationPolicy:
    """The global policy; a persona's ``moderation_input``/``moderation_output`` go on top via ``override``."""
    return ModerationPolicy(input=settings.filter_input_action, output=settings.filter_output_action)


__all__ = [
    "BLOCK_REASONS",
    "Action",
    "FilterStats",
    "Match",
    "ModerationPolicy",
    "ModerationResult",
    "Moderator",
    "NullModerator",
    "StreamGuard",
    "WordFilter",
    "block_reason",
    "build_moderator",
    "mask_text",
    "policy_from_settings",
]
