"""Routing a generation to a provider: name resolution, parameter checks, retries, circuit breakers, fallbacks.

The pipeline hands the router an ordered list of candidate models; the router streams from the first that works and
reports which one answered. Resilience lives here so that every transport gets it through the one pipeline:

    for each candidate (the requested model, the persona's fallbacks, DAEHWA_FALLBACK_MODELS):
        breaker open?            -> skip it at once
        bulkhead full too long?  -> skip it (ProviderBusy)
        no first text within DAEHWA_FIRST_TOKEN_TIMEOUT -> skip it
        retryable error (connection, 429, 5xx)          -> wait (backoff + jitter, Retry-After) and try again
    nothing within DAEHWA_FIRST_TOKEN_DEADLINE, or every candidate failed -> raise; the pipeline sends the canned reply

Everything above happens only before the first text is handed on. Once a delta has been yielded it may be on the
user's screen, so a later failure is never retried or continued elsewhere (that would duplicate or splice text): the
error is raised and the pipeline keeps the partial reply as ``interrupted``. A stall mid-stream longer than
DAEHWA_STREAM_IDLE_TIMEOUT counts as such a failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import (
    DaehwaError,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    ProviderError,
    ProviderTimeout,
    UnsupportedParameter,
)
from .metrics import Metrics
from .providers.base import Provider
from .providers.registry import ProviderRegistry
from .resilience import BreakerPolicy, BreakerSnapshot, BreakerState, Bulkhead, CircuitBreaker, Clock, RetryPolicy
from .types import (
    PARAM_BOUNDS,
    PARAM_NAMES,
    ChatMessage,
    GenerationParams,
    ProviderEvent,
    ProviderRequest,
    StreamEnd,
    TextDelta,
    Usage,
    bound_message,
    out_of_bounds,
)

if TYPE_CHECKING:
    from .config import Settings
    from .stores.breakers import BreakerBoard

log = logging.getLogger(__name__)

#: How often a process reads the breakers other processes opened (``share_breakers``).
BOARD_SECONDS = 0.5


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


def check_bounds(params: GenerationParams) -> None:
    """Every numeric parameter within ``PARAM_BOUNDS``, whichever way it came (the transports check it too)."""
    for name, value in params.set_fields().items():
        if name in PARAM_BOUNDS and out_of_bounds(name, value):
            raise InvalidRequest(bound_message(name, value), param=name)


def params_from_wire(values: Mapping[str, object]) -> GenerationParams:
    """GenerationParams from OpenAI wire names; names that are not first-class fields go to ``extra``."""
    known = {k: v for k, v in values.items() if k in PARAM_NAMES}
    extra = {k: v for k, v in values.items() if k not in PARAM_NAMES}
    if isinstance(known.get("stop"), str):
        known["stop"] = (known["stop"],)
    elif known.get("stop") is not None:
        known["stop"] = tuple(known["stop"])  # type: ignore[arg-type]
    return GenerationParams(**known, extra=extra)  # type: ignore[arg-type]


class FirstTokenTimeout(ProviderTimeout, code="first_token_timeout"):
    """A model sent no text within ``DAEHWA_FIRST_TOKEN_TIMEOUT``; the router moves on to the next candidate."""


class StreamStalled(ProviderTimeout, code="stream_stalled"):
    """A reply stopped mid-way for longer than ``DAEHWA_STREAM_IDLE_TIMEOUT``."""


@dataclass(frozen=True, slots=True)
class ResilienceConfig:
    """The router's knobs; ``from_settings`` reads them from the ``DAEHWA_`` settings."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    first_token_timeout: float = 8.0
    first_token_deadline: float = 20.0
    stream_idle_timeout: float = 30.0
    fallback_models: tuple[str, ...] = ()
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    bulkhead_limit: int = 100
    bulkhead_wait: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ResilienceConfig:
        return cls(
            retry=RetryPolicy(
                attempts=settings.retry_attempts,
                base_delay=settings.retry_base_delay,
                max_delay=settings.retry_max_delay,
            ),
            first_token_timeout=settings.first_token_timeout,
            first_token_deadline=settings.first_token_deadline,
            stream_idle_timeout=settings.stream_idle_timeout,
            fallback_models=tuple(settings.fallback_models),
            breaker=BreakerPolicy(
                window=settings.breaker_window_seconds,
                min_requests=settings.breaker_min_requests,
                threshold=settings.breaker_error_rate,
                open_seconds=settings.breaker_open_seconds,
                probes=settings.breaker_half_open_probes,
            ),
            bulkhead_limit=settings.bulkhead_limit,
            bulkhead_wait=settings.bulkhead_wait_seconds,
        )


@dataclass(frozen=True, slots=True)
class BulkheadSnapshot:
    provider: str
    limit: int
    active: int
    waiting: int


@dataclass(frozen=True, slots=True)
class _Candidate:
    name: str  # full name, provider/model
    provider: Provider
    model_id: str
    params: GenerationParams


class Router:
    """Streams a generation from the first candidate model that answers, with retries, breakers and bulkheads.

    ``health()`` reports breaker and bulkhead state for /readyz and ``daehwa models``; ``model_state(name)`` gives
    one model's breaker state.
    """

    def __init__(
        self,
        providers: ProviderRegistry,
        metrics: Metrics,
        config: ResilienceConfig | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.providers = providers
        self.metrics = metrics
        self.config = config or ResilienceConfig()
        self.clock = clock  # breakers only; timeouts use the event loop's clock
        self.sleep = sleep
        self._breakers: dict[str, CircuitBreaker] = {}
        self._board: BreakerBoard | None = None  # set while share_breakers runs
        self._board_writes: set[asyncio.Future[None]] = set()
        self._bulkheads: dict[str, Bulkhead] = {}  # one per provider: as many as the providers file has
        # A provider passes any model name on to its upstream, so breakers are kept for every configured model but
        # only for the most recently used of the others (``metrics.unlisted_model_limit``): a client sending made-up
        # model names must not grow memory (breakers, metric series) without end.
        self._listed = self._listed_models()
        self._unlisted: OrderedDict[str, None] = OrderedDict()  # least recently used first
        metrics.pin_models(self._listed)

    # -- checks and state --------------------------------------------------------------------------------------
    def check(self, model: str, params: GenerationParams) -> GenerationParams:
        """Resolve ``model`` and check ``params`` for it, before anything is stored; raises on bad input."""
        provider, _ = self.providers.resolve(model)
        check_bounds(params)
        return check_params(provider, params)

    def _listed_models(self) -> set[str]:
        """Full names of the models the configuration names: the providers' lists and defaults, the fallbacks."""
        names = {
            self.providers.full_name(p, m)
            for p in self.providers
            for m in (*p.config.models, p.config.default_model)
            if m
        }
        names.update(self.full_name(name) for name in self.config.fallback_models)
        return names

    def breaker(self, model: str) -> CircuitBreaker:
        """The circuit breaker of ``model`` (a full name, ``provider/model``), created closed on first use."""
        if model not in self._listed:
            self._unlisted[model] = None
            self._unlisted.move_to_end(model)
            while len(self._unlisted) > self.metrics.unlisted_model_limit:
                old, _ = self._unlisted.popitem(last=False)
                self._breakers.pop(old, None)  # a call still holding it finishes with it; then it is garbage
        breaker = self._breakers.get(model)
        if breaker is None:
            breaker = CircuitBreaker(model, self.config.breaker, clock=self.clock, on_change=self._breaker_changed)
            self._breakers[model] = breaker
            self.metrics.breaker_state.labels(self.metrics.model(model)).set(BreakerState.CLOSED)
        return breaker

    def bulkhead(self, provider: str) -> Bulkhead:
        bulkhead = self._bulkheads.get(provider)
        if bulkhead is None:
            bulkhead = Bulkhead(provider, limit=self.config.bulkhead_limit, max_wait=self.config.bulkhead_wait)
            self._bulkheads[provider] = bulkhead
        return bulkhead

    def full_name(self, model: str) -> str:
        """``local`` -> ``local/<its default model>``; a name that does not resolve is returned as given."""
        try:
            provider, model_id = self.providers.resolve(model)
        except DaehwaError:
            return model
        return self.providers.full_name(provider, model_id)

    def model_state(self, model: str) -> str:
        """Breaker state of a model (``"closed"``, ``"half-open"``, ``"open"``); accepts ``local`` or a full name."""
        breaker = self._breakers.get(self.full_name(model))
        return breaker.state.label if breaker is not None else BreakerState.CLOSED.label

    def health(self) -> dict[str, list[BreakerSnapshot] | list[BulkheadSnapshot]]:
        """Every breaker and bulkhead that has seen traffic, for /readyz (JSON-friendly with ``dataclasses.asdict``)."""
        return {
            "breakers": [b.snapshot() for _, b in sorted(self._breakers.items())],
            "bulkheads": [
                BulkheadSnapshot(name, b.limit, b.active, b.waiting) for name, b in sorted(self._bulkheads.items())
            ],
        }

    def _breaker_changed(self, breaker: CircuitBreaker) -> None:
        state = breaker._state  # the stored state: reading .state here would recurse through the transition
        label = self.metrics.model(breaker.name)
        self.metrics.breaker_state.labels(label).set(state)
        self.metrics.breaker_transitions.labels(label, state.label).inc()
        origin = " (opened by another server process)" if breaker.adopted else ""
        log.warning(
            "circuit breaker of %s is now %s%s", breaker.name, state.label, origin, extra={"model": breaker.name}
        )
        if self._board is not None and not breaker.adopted:
            if state is BreakerState.OPEN:
                self._tell_board(self._board.opened(breaker.name, breaker.policy.open_seconds))
            elif state is BreakerState.CLOSED:
                self._tell_board(self._board.closed(breaker.name))

    # -- breakers shared between processes ---------------------------------------------------------------------
    async def share_breakers(self, board: BreakerBoard, *, every: float = BOARD_SECONDS) -> None:
        """Note this process's open breakers on ``board`` and adopt the others', until cancelled (the app's
        lifespan runs this in a task). A board that cannot be reached leaves the breakers working in process."""
        self._board = board
        failing = False
        try:
            while True:
                try:
                    for model, seconds in (await board.open_breakers()).items():
                        self.breaker(model).adopt_open(seconds)
                    if failing:
                        log.warning("circuit breakers: the shared board is back")
                    failing = False
                except Exception as exc:
                    if not failing:
                        log.warning(
                            "circuit breakers: the shared board cannot be read (%s); breakers stay per "
                            "process until it can",
                            type(exc).__name__,
                        )
                    failing = True
                await asyncio.sleep(every)
        finally:
            self._board = None

    def _tell_board(self, write: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await write
            except Exception as exc:
                log.warning("circuit breakers: could not note a change on the shared board (%s)", type(exc).__name__)

        task = asyncio.ensure_future(guarded())
        self._board_writes.add(task)
        task.add_done_callback(self._board_writes.discard)

    # -- streaming ---------------------------------------------------------------------------------------------
    def _candidates(self, names: Sequence[str], params: GenerationParams) -> list[tuple[str, _Candidate | DaehwaError]]:
        """Resolved candidates in order, without duplicates; a fallback that cannot take the request is an error."""
        out: list[tuple[str, _Candidate | DaehwaError]] = []
        seen: set[str] = set()
        for position, name in enumerate([*names, *self.config.fallback_models]):
            try:
                provider, model_id = self.providers.resolve(name)
                full = self.providers.full_name(provider, model_id)
                if full in seen:
                    continue
                seen.add(full)
                out.append((full, _Candidate(full, provider, model_id, check_params(provider, params))))
            except DaehwaError as exc:
                if position == 0:
                    raise  # the requested model itself: the caller's mistake (normally caught by check() already)
                log.warning("skipping fallback model %s: %s", name, exc.message)
                out.append((name, exc))
        return out

    async def stream(
        self, candidates: Sequence[str], messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[RouteEvent, None]:
        """Yield ``TextDelta``s from the first candidate that answers, then one ``RouteEnd``; see the module doc."""
        loop = asyncio.get_running_loop()
        run = _Run(deadline=loop.time() + self.config.first_token_deadline)
        resolved = self._candidates(candidates, params)
        primary = resolved[0][0]
        for position, (name, candidate) in enumerate(resolved):
            if isinstance(candidate, DaehwaError):
                run.failures.append((name, candidate))
                continue
            request = ProviderRequest(candidate.model_id, tuple(messages), candidate.params)
            async with aclosing(self._tries(run, candidate, request, position, primary)) as events:
                async for event in events:
                    yield event
                    if isinstance(event, RouteEnd):
                        return
        raise self._give_up(run.failures, run.deadline - loop.time() <= 0)

    async def _tries(
        self, run: _Run, candidate: _Candidate, request: ProviderRequest, position: int, primary: str
    ) -> AsyncGenerator[RouteEvent, None]:
        """One candidate: its tries (with retries and backoff) until it answers, fails for good or time is up.

        Ends with a ``RouteEnd`` when it answered; without one when the next candidate should be tried (its failures
        are in ``run.failures``). A failure after text went out is raised: that reply is not retried anywhere.
        """
        loop = asyncio.get_running_loop()
        name = candidate.name
        breaker = self.breaker(name)
        for attempt in range(1, self.config.retry.attempts + 1):
            remaining = run.deadline - loop.time()
            if remaining <= 0:
                return
            if not breaker.allow():
                retry_in = breaker.retry_in()
                run.failures.append(
                    (
                        name,
                        ModelUnavailable(
                            f"Model {name} is failing; its circuit breaker is open"
                            + (f" for another {retry_in:.0f}s" if retry_in else "")
                            + ". Its fallback models answer meanwhile (persona fallback_models, "
                            "DAEHWA_FALLBACK_MODELS).",
                            code="circuit_open",
                        ),
                    )
                )
                self.metrics.upstream_requests.labels(self.metrics.model(name), "circuit_open").inc()
                return
            delivered = False  # True once a delta went out: from then on, no retry and no fallback
            settled = False  # the breaker has been told how this call went
            try:
                end: StreamEnd | None = None
                async with aclosing(self._attempt(run, candidate, request, remaining)) as events:
                    async for event in events:
                        if isinstance(event, StreamEnd):
                            end = event
                            break
                        delivered = True
                        yield event
                assert end is not None  # an attempt ends with the stream's end or raises
                breaker.record_success()
                settled = True
                self.metrics.upstream_requests.labels(self.metrics.model(name), "ok").inc()
                if position > 0:
                    self.metrics.fallbacks.labels("model").inc()
                    log.info("answered by fallback model %s", name, extra={"model": name, "primary": primary})
                yield RouteEnd(
                    model=name, usage=end.usage, finish_reasons=end.finish_reasons, fallback_used=position > 0
                )
                return
            except Exception as raw:
                settled = True
                exc = raw if isinstance(raw, DaehwaError) else _unexpected(name, raw)
                if _counts_against_breaker(exc):
                    breaker.record_failure()
                else:
                    breaker.release()
                label = self.metrics.model(name)
                self.metrics.upstream_requests.labels(label, "error").inc()
                self.metrics.upstream_errors.labels(label, exc.code).inc()
                if delivered:
                    raise exc from None  # text is out: the pipeline keeps it, marked interrupted
                log.warning(
                    "model %s failed (try %d): %s",
                    name,
                    attempt,
                    exc.message,
                    extra={"model": name, "error_code": exc.code, "attempt": attempt},
                )
                if isinstance(exc, InvalidRequest) and position == 0:
                    raise exc from None  # the request itself is wrong; another model would not help
                run.failures.append((name, exc))
                if not (isinstance(exc, ProviderError) and exc.retryable) or isinstance(exc, FirstTokenTimeout):
                    return  # not worth another try on this model: next candidate
                if attempt >= self.config.retry.attempts:
                    return
                wait = self.config.retry.delay(attempt, exc.retry_after)
                if wait < 0 or loop.time() + wait >= run.deadline:
                    return  # asked to wait too long: the fallback answers sooner
                self.metrics.retries.labels(label).inc()
                await self.sleep(wait)
            finally:
                if not settled:
                    breaker.release()  # the client left (cancel / close): says nothing about the upstream

    async def _attempt(
        self, run: _Run, candidate: _Candidate, request: ProviderRequest, remaining: float
    ) -> AsyncGenerator[TextDelta | StreamEnd, None]:
        """One call to the provider within its bulkhead: the first text within the first-token timeout, the rest
        without a stall longer than the idle timeout, then its ``StreamEnd`` (yielded once the slot is free)."""
        loop = asyncio.get_running_loop()
        name, provider = candidate.name, candidate.provider
        bulkhead = self.bulkhead(provider.name)
        stream: AsyncIterator[ProviderEvent] | None = None
        try:
            async with bulkhead.slot(max_wait=remaining):
                self.metrics.bulkhead_active.labels(bulkhead.name).inc()
                try:
                    # Loading a model (the embedded one's first use) is not the model being slow: the first-token
                    # clocks start once it is ready.
                    warm_from = loop.time()
                    await provider.warm(candidate.model_id)
                    run.deadline += loop.time() - warm_from
                    stream = provider.stream(request)
                    started = loop.time()
                    if provider.first_token_timeout is not None:  # e.g. the embedded model's, longer
                        first_by = started + provider.first_token_timeout
                        run.deadline = max(run.deadline, first_by)
                    else:
                        first_by = min(started + self.config.first_token_timeout, run.deadline)
                    idle = self.config.stream_idle_timeout

                    def first_token() -> DaehwaError:  # the errors are made only when raised: most streams are on time
                        return FirstTokenTimeout(
                            f"Model {name} sent no text within {first_by - started:.3g}s "
                            "(DAEHWA_FIRST_TOKEN_TIMEOUT, DAEHWA_FIRST_TOKEN_DEADLINE, "
                            "DAEHWA_LOCAL_FIRST_TOKEN_TIMEOUT for the embedded model)."
                        )

                    def stalled() -> DaehwaError:
                        return StreamStalled(
                            f"Model {name} stopped sending text for {idle:g}s mid-reply; the text so far is kept "
                            "(DAEHWA_STREAM_IDLE_TIMEOUT)."
                        )

                    end: StreamEnd | None = None
                    delivered = False
                    while end is None:
                        # Before the first text the clock is the first-token one; after it, the idle one per event.
                        by = loop.time() + idle if delivered else first_by
                        event = await _timed(stream, name, by, stalled if delivered else first_token)
                        if isinstance(event, StreamEnd):
                            end = event
                        elif event.text:
                            delivered = True
                            yield event
                finally:
                    self.metrics.bulkhead_active.labels(bulkhead.name).dec()
            yield end
        finally:
            if stream is not None:
                await stream.aclose()  # type: ignore[attr-defined]

    def _give_up(self, failures: list[tuple[str, DaehwaError]], out_of_time: bool) -> DaehwaError:
        """The error that ends a turn no model could answer."""
        if out_of_time:
            tried = "; ".join(f"{name}: {exc.message}" for name, exc in failures) or "no model answered in time"
            return ProviderTimeout(
                f"No model sent any text within {self.config.first_token_deadline:g}s (DAEHWA_FIRST_TOKEN_DEADLINE). "
                f"Tried: {tried}"
            )
        last: dict[str, DaehwaError] = {}
        for name, exc in failures:
            last[name] = exc  # one line per model: its last error
        if len(last) == 1:
            return next(iter(last.values()))
        detail = "; ".join(f"{name}: {exc.message}" for name, exc in last.items())
        return ProviderError(f"No model could answer. {detail}", code="all_models_failed")


def _unexpected(name: str, exc: Exception) -> ProviderError:
    """A provider bug must not take the turn down with it: it counts as that model failing."""
    log.error("model %s failed unexpectedly", name, exc_info=exc, extra={"model": name})
    return ProviderError(
        f"The model {name} failed unexpectedly ({type(exc).__name__}); the server log has the details.",
        code="provider_crashed",
    )


def _ended_early(name: str) -> ProviderError:
    return ProviderError(f"The model {name} ended its stream without finishing; try again.", retryable=True)


def _counts_against_breaker(exc: DaehwaError) -> bool:
    """Upstream failures count; our own refusals (busy, breaker, missing key) and the caller's mistakes do not."""
    if isinstance(exc, (ModelUnavailable, ModelNotFound, InvalidRequest)):
        return False
    return isinstance(exc, ProviderError)


@dataclass(slots=True)
class _Run:
    """One routed stream's shared clock and what went wrong so far (across candidates and tries)."""

    deadline: float
    failures: list[tuple[str, DaehwaError]] = field(default_factory=list)


async def _timed(
    stream: AsyncIterator[ProviderEvent], name: str, by: float, late: Callable[[], DaehwaError]
) -> ProviderEvent:
    """The stream's next event by the loop time ``by``; ``late()`` is raised when it does not come in time."""
    try:
        async with asyncio.timeout_at(by):
            return await anext(stream)
    except StopAsyncIteration:
        raise _ended_early(name) from None
    except TimeoutError:
        raise late() from None
