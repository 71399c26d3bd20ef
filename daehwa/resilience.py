"""The building blocks that keep a failing upstream from hurting users: retry policy, circuit breaker, bulkhead.

They know nothing about models or streams; ``daehwa.routing.Router`` composes them around each provider call:

    bulkhead (per provider)  ->  breaker (per provider/model)  ->  provider.stream(...)  ->  retry on failure

Each takes its clock as a parameter so tests drive time by hand instead of sleeping.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from .errors import ProviderBusy

Clock = Callable[[], float]


# -- retries ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait between tries of one model.

    Waits grow exponentially with "full jitter" (a random time up to the exponential bound), so many clients that
    failed together do not come back together. An upstream's ``Retry-After`` is honoured as a minimum wait; one
    longer than ``max_delay`` means "not this model now", and the router moves on to the fallback instead.
    """

    attempts: int = 3  # tries per model, the first one included
    base_delay: float = 0.25
    max_delay: float = 4.0

    def delay(
        self, retry: int, retry_after: float | None = None, *, rand: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait before retry number ``retry`` (1 = the first retry), or -1 to give up on this model."""
        bound = min(self.max_delay, self.base_delay * (2 ** (retry - 1)))
        wait = bound * rand()
        if retry_after is not None:
            if retry_after > self.max_delay:
                return -1.0
            # At least what the upstream asked for, plus a little jitter so the retries do not arrive in lockstep.
            wait = retry_after + min(self.base_delay, bound) * rand()
        return wait


# -- circuit breaker -------------------------------------------------------------------------------------------
class BreakerState(enum.IntEnum):
    """Values match the ``daehwa_circuit_breaker_state`` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker's state for /readyz, ``daehwa models`` and logs."""

    name: str
    state: str  # "closed", "half-open" or "open"
    requests: int  # results in the rolling window
    failures: int
    error_rate: float
    retry_in: float | None  # seconds until an open breaker lets a probe through


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a circuit breaker opens and how it lets calls through again (see ``CircuitBreaker``)."""

    window: float = 60.0
    min_requests: int = 10
    threshold: float = 0.5
    open_seconds: float = 30.0
    probes: int = 1


class CircuitBreaker:
    """Fails fast while an upstream keeps failing, and lets a few probes through to notice when it is back.

    Closed: every call goes through; results are kept for ``window`` seconds. When at least ``min_requests`` results
    are in the window and the share of failures reaches ``threshold``, the breaker opens. Open: calls are refused for
    ``open_seconds``. Then half-open: up to ``probes`` calls go through at once; one success closes the breaker (with a
    fresh window), one failure opens it again.
    """

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy | None = None,
        *,
        clock: Clock = time.monotonic,
        on_change: Callable[[CircuitBreaker], None] | None = None,
    ) -> None:
        self.name = name
        self.policy = policy or BreakerPolicy()
        self.clock = clock
        self.on_change = on_change
        self._state = BreakerState.CLOSED
        self._results: deque[tuple[float, bool]] = deque()  # (time, failed)
        self._failures = 0
        self._opened_at = 0.0
        self._probing = 0
        self.adopted = False  # the last transition came from another process (``adopt_open``), not from here

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose time is up reads as half-open."""
        if self._state is BreakerState.OPEN and self.clock() - self._opened_at >= self.policy.open_seconds:
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """Whether a call may go to the upstream now. A true answer must be followed by exactly one of
        ``record_success``, ``record_failure`` or ``release``."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._probing < self.policy.probes:
            self._probing += 1
            return True
        return False

    def record_success(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._probing = max(0, self._probing - 1)
            self._results.clear()
            self._failures = 0
            self._set(BreakerState.CLOSED)
            return
        self._add(failed=False)

    def record_failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._probing = max(0, self._probing - 1)
            self._open()
            return
        self._add(failed=True)
        if (
            self._state is BreakerState.CLOSED
            and len(self._results) >= self.policy.min_requests
            and self._failures / len(self._results) >= self.policy.threshold
        ):
            self._open()

    def adopt_open(self, seconds: float) -> None:
        """Another process's breaker of this upstream opened: refuse calls here too for the ``seconds`` it has left.
        An open breaker that closes later than that stays as it is."""
        if self.state is BreakerState.OPEN and (self.retry_in() or 0.0) >= seconds:
            return
        self._opened_at = self.clock() - max(0.0, self.policy.open_seconds - seconds)
        self._probing = 0
        self.adopted = True
        try:
            self._set(BreakerState.OPEN)
        finally:
            self.adopted = False

    def release(self) -> None:
        """The call ended without telling anything about the upstream (the client left): free its probe slot."""
        if self._state is BreakerState.HALF_OPEN:
            self._probing = max(0, self._probing - 1)

    def retry_in(self) -> float | None:
        if self.state is not BreakerState.OPEN:
            return None
        return max(0.0, self.policy.open_seconds - (self.clock() - self._opened_at))

    def snapshot(self) -> BreakerSnapshot:
        state = self.state
        self._prune(self.clock())
        total = len(self._results)
        return BreakerSnapshot(
            name=self.name,
            state=state.label,
            requests=total,
            failures=self._failures,
            error_rate=self._failures / total if total else 0.0,
            retry_in=self.retry_in(),
        )

    def _add(self, *, failed: bool) -> None:
        now = self.clock()
        self._prune(now)
        self._results.append((now, failed))
        self._failures += failed

    def _prune(self, now: float) -> None:
        horizon = now - self.policy.window
        results = self._results
        while results and results[0][0] < horizon:
            _, failed = results.popleft()
            self._failures -= failed

    def _open(self) -> None:
        self._opened_at = self.clock()
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is self._state:
            return
        self._state = state
        if state is BreakerState.HALF_OPEN:
            self._probing = 0
        if self.on_change is not None:
            self.on_change(self)


# -- bulkhead --------------------------------------------------------------------------------------------------
class Bulkhead:
    """At most ``limit`` concurrent calls to one provider; a caller waits at most ``max_wait`` seconds for a slot,
    then gets ``ProviderBusy``, so a slow upstream costs a bounded number of waiting tasks, not a pile-up."""

    def __init__(self, name: str, *, limit: int = 100, max_wait: float = 2.0) -> None:
        self.name = name
        self.limit = limit
        self.max_wait = max_wait
        self._semaphore = asyncio.Semaphore(limit)
        self.active = 0
        self.waiting = 0

    @asynccontextmanager
    async def slot(self, max_wait: float | None = None) -> AsyncIterator[None]:
        wait = self.max_wait if max_wait is None else min(max_wait, self.max_wait)
        if self._semaphore.locked():
            self.waiting += 1
            try:
                async with asyncio.timeout(max(0.0, wait)):
                    await self._semaphore.acquire()
            except TimeoutError:
                raise ProviderBusy(
                    f"Provider {self.name!r} is busy: {self.limit} requests are already running. Try again in a "
                    f"moment (or raise DAEHWA_BULKHEAD_LIMIT if the upstream can take more).",
                    code="provider_busy",
                ) from None
            finally:
                self.waiting -= 1
        else:
            await self._semaphore.acquire()
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            self._semaphore.release()
