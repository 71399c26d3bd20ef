"""The resilience building blocks on their own: retry policy, circuit breaker (on a hand-driven clock), bulkhead."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from daehwa.errors import ProviderBusy
from daehwa.resilience import BreakerPolicy, BreakerState, Bulkhead, CircuitBreaker, RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- retry policy ----------------------------------------------------------------------------------------------
def test_backoff_grows_exponentially_up_to_the_cap_with_full_jitter():
    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=3.0)
    assert [policy.delay(n, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert policy.delay(3, rand=lambda: 0.0) == 0.0  # full jitter: anywhere from 0 to the bound
    assert policy.delay(2, rand=lambda: 0.5) == 0.5


def test_retry_after_is_a_minimum_wait_and_too_long_means_give_up():
    policy = RetryPolicy(attempts=3, base_delay=0.25, max_delay=4.0)
    assert policy.delay(1, 1.5, rand=lambda: 0.0) == 1.5
    assert 1.5 <= policy.delay(1, 1.5, rand=lambda: 1.0) <= 1.75  # a little jitter on top, never less
    assert policy.delay(1, 30.0) == -1.0  # longer than max_delay: the caller moves on to the fallback


def test_jittered_delays_differ_between_callers():
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    delays = {policy.delay(3) for _ in range(20)}
    assert len(delays) > 10 and all(0 <= d <= 4.0 for d in delays)


# -- circuit breaker -------------------------------------------------------------------------------------------
def breaker(clock: Clock, **kw: object) -> CircuitBreaker:
    policy = BreakerPolicy(window=60.0, min_requests=4, threshold=0.5, open_seconds=30.0)
    return CircuitBreaker("p/m", policy, clock=clock, **kw)


def test_breaker_stays_closed_below_the_minimum_number_of_requests():
    b = breaker(Clock())
    for _ in range(3):
        assert b.allow()
        b.record_failure()
    assert b.state is BreakerState.CLOSED  # 3 failures out of 3, but fewer than min_requests


def test_breaker_opens_at_the_threshold_and_fails_fast():
    changes: list[str] = []
    b = breaker(Clock(), on_change=lambda br: changes.append(br.state.label))
    for ok in (True, True, False):
        assert b.allow()
        b.record_success() if ok else b.record_failure()
    assert b.state is BreakerState.CLOSED  # 1/3 failed
    b.allow()
    b.record_failure()  # 2/4 = 50%: opens
    assert b.state is BreakerState.OPEN
    assert changes == ["open"]
    assert not b.allow()
    snap = b.snapshot()
    assert (snap.state, snap.requests, snap.failures, snap.error_rate) == ("open", 4, 2, 0.5)
    assert snap.retry_in == pytest.approx(30.0)


def test_old_results_leave_the_rolling_window():
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 61  # those failures are older than the window now
    b.record_failure()
    assert b.state is BreakerState.CLOSED
    assert b.snapshot().requests == 1


def test_half_open_lets_one_probe_through_and_a_success_closes_it():
    clock = Clock()
    b = breaker(clock)
    for _ in range(4):
        b.record_failure()
    assert b.state is BreakerState.OPEN
    clock.now += 29.9
    assert not b.allow()
    clock.now += 0.2
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()  # the probe
    assert not b.allow()  # only one at a time
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert b.snapshot().requests == 0  # a fresh window: old failures do not reopen it
    b.record_failure()
    assert b.state is BreakerState.CLOSED


def test_a_failed_probe_opens_it_again_for_a_full_period():
    clock = Clock()
    b = breaker(clock)
    for _ in range(4):
        b.record_failure()
    clock.now += 31
    assert b.allow()
    b.record_failure()
    assert b.state is BreakerState.OPEN
    clock.now += 29
    assert not b.allow()
    clock.now += 2
    assert b.allow()


def test_a_probe_released_without_a_verdict_frees_its_slot():
    clock = Clock()
    b = breaker(clock)
    for _ in range(4):
        b.record_failure()
    clock.now += 31
    assert b.allow()
    b.release()  # the client left mid-probe
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()


# -- bulkhead --------------------------------------------------------------------------------------------------
async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until ``condition`` holds (a few loop turns; no wall-clock sleeps)."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def test_bulkhead_caps_concurrency_and_refuses_after_a_bounded_wait():
    bulkhead = Bulkhead("p", limit=2, max_wait=0.05)
    release = asyncio.Event()
    inside = 0

    async def hold() -> None:
        nonlocal inside
        async with bulkhead.slot():
            inside += 1
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(2)]
    await until(lambda: inside == 2)
    assert bulkhead.active == 2
    with pytest.raises(ProviderBusy) as info:
        async with bulkhead.slot():
            pass
    assert "DAEHWA_BULKHEAD_LIMIT" in info.value.message
    assert info.value.status == 503
    assert bulkhead.waiting == 0
    release.set()
    await asyncio.gather(*holders)
    assert bulkhead.active == 0
    async with bulkhead.slot():  # free again
        assert bulkhead.active == 1


async def test_a_waiter_gets_the_slot_when_one_frees_up_in_time():
    bulkhead = Bulkhead("p", limit=1, max_wait=5.0)
    release = asyncio.Event()
    entered = asyncio.Event()

    async def hold() -> None:
        async with bulkhead.slot():
            entered.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await entered.wait()

    async def wait_for_slot() -> str:
        async with bulkhead.slot():
            return "got it"

    waiter = asyncio.create_task(wait_for_slot())
    await until(lambda: bulkhead.waiting == 1)
    release.set()
    assert await waiter == "got it"
    await holder
    assert (bulkhead.active, bulkhead.waiting) == (0, 0)


async def test_a_cancelled_waiter_does_not_leak_a_slot():
    bulkhead = Bulkhead("p", limit=1, max_wait=5.0)
    release = asyncio.Event()
    entered = asyncio.Event()

    async def hold() -> None:
        async with bulkhead.slot():
            entered.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await entered.wait()

    async def wait_for_slot() -> None:
        async with bulkhead.slot():
            pass

    waiter = asyncio.create_task(wait_for_slot())
    await until(lambda: bulkhead.waiting == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    async with bulkhead.slot():
        assert bulkhead.active == 1
    assert (bulkhead.active, bulkhead.waiting) == (0, 0)
