"""What a turn costs: a price table (USD per million prompt / completion tokens) by model name or pattern.

The built-in table holds OpenAI's list prices for the models daehwa names, and zero for the embedded model. A TOML file
(``DAEHWA_PRICES_FILE``) adds to and overrides it::

    [models."openai/gpt-4o-mini"]
    input = 0.15     # USD per million prompt tokens
    output = 0.60    # USD per million completion tokens

    [models."vllm/*"]   # shell-style patterns match every model of a provider
    input = 0
    output = 0

A model matched by nothing has an unknown cost (``None``), which usage reports show as such rather than as free.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .config import read_toml_file
from .errors import ConfigError, InvalidRequest
from .types import Usage, UsageTotal


@dataclass(frozen=True, slots=True)
class Price:
    input: float  # USD per million prompt tokens
    output: float  # USD per million completion tokens


#: List prices (USD per 1M tokens) when this table was written; prices change, so put yours in DAEHWA_PRICES_FILE.
BUILTIN_PRICES: Mapping[str, Price] = {
    "local/*": Price(0.0, 0.0),
    "openai/gpt-4o-mini": Price(0.15, 0.60),
    "openai/gpt-4o": Price(2.50, 10.00),
    "openai/gpt-4.1-mini": Price(0.40, 1.60),
    "openai/gpt-4.1-nano": Price(0.10, 0.40),
    "openai/gpt-4.1": Price(2.00, 8.00),
}


class PriceTable:
    """Implements the pipeline's ``Pricing`` protocol: ``cost(model, usage)`` in USD, or None when unknown."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self.exact = {name: p for name, p in prices.items() if not _is_pattern(name)}
        # The most specific pattern wins: "openai/gpt-4o*" before "openai/*".
        self.patterns = sorted(((n, p) for n, p in prices.items() if _is_pattern(n)), key=lambda item: -len(item[0]))

    @classmethod
    def from_settings(cls, prices_file: Path | None) -> PriceTable:
        prices = dict(BUILTIN_PRICES)
        if prices_file is not None:
            prices.update(load_prices(prices_file))
        return cls(prices)

    def price(self, model: str) -> Price | None:
        found = self.exact.get(model)
        if found is not None:
            return found
        for pattern, price in self.patterns:
            if fnmatch.fnmatchcase(model, pattern):
                return price
        return None

    def cost(self, model: str, usage: Usage) -> float | None:
        price = self.price(model)
        if price is None:
            return None
        return round((usage.prompt_tokens * price.input + usage.completion_tokens * price.output) / 1_000_000, 10)


def load_prices(path: Path) -> dict[str, Price]:
    """Read a price file (see the module docstring); errors name the file and the entry."""
    data = read_toml_file(path, what="Price file", setting="DAEHWA_PRICES_FILE")
    models = data.get("models")
    if not isinstance(models, dict):
        raise ConfigError(f'Price file {path} needs [models."<provider>/<model>"] tables with input and output.')
    out: dict[str, Price] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict) or set(entry) - {"input", "output"}:
            raise ConfigError(
                f'{path}: models."{name}" must be a table with only input and output (USD per million tokens).'
            )
        try:
            price = Price(float(entry.get("input", 0.0)), float(entry.get("output", 0.0)))
        except (TypeError, ValueError):
            raise ConfigError(f'{path}: models."{name}": input and output must be numbers.') from None
        if price.input < 0 or price.output < 0:
            raise ConfigError(f'{path}: models."{name}": prices cannot be negative.')
        out[name] = price
    return out


def _is_pattern(name: str) -> bool:
    return any(ch in name for ch in "*?[")


# -- usage reports (``daehwa usage`` and ``GET /api/usage``) -----------------------------------------------------
_RELATIVE = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")


def parse_since(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """``2026-11-01`` (midnight UTC), an ISO date-time, ``today``, or a span back from now: ``7d``, ``24h``, ``30m``."""
    if text is None or not text.strip():
        return None
    now = now or datetime.now(UTC)
    value = text.strip().lower()
    if value == "today":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        return now - timedelta(**{{"d": "days", "h": "hours", "m": "minutes"}[unit]: amount})
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(
            f"Cannot read the date {text!r}: use YYYY-MM-DD, an ISO date-time, 'today', or a span like 7d / 24h.",
            param="since",
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def usage_report(totals: Sequence[UsageTotal], since: datetime | None) -> dict[str, Any]:
    """Totals per user and model, and their sum, as JSON-ready data."""
    rows = [
        {
            "user_id": t.user_id,
            "user": t.user_name,
            "model": t.model,
            "turns": t.turns,
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
            "total_tokens": t.total_tokens,
            "cost": round(t.cost, 6),
        }
        for t in totals
    ]
    total: dict[str, float] = {
        key: sum(row[key] for row in rows)  # type: ignore[misc]
        for key in ("turns", "prompt_tokens", "completion_tokens", "total_tokens")
    }
    total["cost"] = round(sum(t.cost for t in totals), 6)
    return {"since": since.isoformat() if since else None, "currency": "USD", "totals": rows, "sum": total}
