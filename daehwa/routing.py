"""Routing a generation to a provider: name resolution, parameter checks, and (later) retries and fallbacks.

The pipeline hands the router an ordered list of candidate models; the router streams from the first that works and
reports which one answered. Resilience (retries, circuit breakers, bulkheads, first-token timeouts) lives here so that
every transport gets it through the one pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from .errors import ProviderError, UnsupportedParameter
from .metrics import Metrics
from .providers.base import Provider
from .providers.registry import ProviderRegistry
from .types import PARAM_NAMES, ChatMessage, GenerationParams, ProviderRequest, StreamEnd, TextDelta, Usage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RouteEnd:
    """The last event of a routed stream."""

    model: str  # full name of the model that answered
    usage: Usage | None
    finish_reasons: Mapping[int, str] = field(default_factory=lambda: {0: "stop"})
    fallback_used: bool = False


RouteEvent = TextDelta | RouteEnd


def check_params(provider: Provider, params: GenerationParams) -> GenerationParams:
    """Reject or drop (with a warning) the parameters ``provider`` cannot honour; never silently."""
    given = params.set_fields()
    unsupported = [
        name
        for name in given
        if (provider.supported_params and name not in provider.supported_params)
        or name in provider.config.unsupported_params
    ]
    if not unsupported:
        return params
    if provider.config.unsupported_action == "reject":
        name = unsupported[0]
        raise UnsupportedParameter(
            f"Provider {provider.name!r} does not support the parameter {name!r}: remove it from the request"
            + (" (or set unsupported_action = 'drop' for this provider)." if provider.name != "local" else "."),
            param=name,
        )
    log.warning("dropping parameters %s not supported by provider %s", unsupported, provider.name)
    kept = {k: v for k, v in given.items() if k not in unsupported}
    return params_from_wire(kept)


def params_from_wire(values: Mapping[str, object]) -> GenerationParams:
    """GenerationParams from OpenAI wire names; names that are not first-class fields go to ``extra``."""
    known = {k: v for k, v in values.items() if k in PARAM_NAMES}
    extra = {k: v for k, v in values.items() if k not in PARAM_NAMES}
    if isinstance(known.get("stop"), str):
        known["stop"] = (known["stop"],)
    elif known.get("stop") is not None:
        known["stop"] = tuple(known["stop"])  # type: ignore[arg-type]
    return GenerationParams(**known, extra=extra)  # type: ignore[arg-type]


class Router:
    """Streams a generation from the first candidate model that answers."""

    def __init__(self, providers: ProviderRegistry, metrics: Metrics) -> None:
        self.providers = providers
        self.metrics = metrics

    def check(self, model: str, params: GenerationParams) -> GenerationParams:
        """Resolve ``model`` and check ``params`` for it, before anything is stored; raises on bad input."""
        provider, _ = self.providers.resolve(model)
        return check_params(provider, params)

    async def stream(
        self, candidates: Sequence[str], messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[RouteEvent]:
        model = candidates[0]
        provider, model_id = self.providers.resolve(model)
        request = ProviderRequest(model=model_id, messages=tuple(messages), params=check_params(provider, params))
        full_name = self.providers.full_name(provider, model_id)
        stream = provider.stream(request)
        try:
            async for event in stream:
                if isinstance(event, TextDelta):
                    yield event
                elif isinstance(event, StreamEnd):
                    self.metrics.upstream_requests.labels(full_name, "ok").inc()
                    yield RouteEnd(model=full_name, usage=event.usage, finish_reasons=event.finish_reasons)
                    return
        except BaseException:
            self.metrics.upstream_requests.labels(full_name, "error").inc()
            raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        raise ProviderError(f"The model {full_name} ended its stream without finishing; try again.", retryable=True)
