"""Nothing the pipeline keeps per turn, per conversation, per failure or per model name piles up.

benchmarks/bench_soak.py measures memory over minutes; these tests pin the causes it would find: tasks left running,
background saves never forgotten, and state keyed by a name the client chose (circuit breakers, metric series).
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from dataclasses import replace

from daehwa.chat import TurnDelta, TurnRequest
from daehwa.errors import ProviderError
from daehwa.metrics import Metrics
from daehwa.services import Services
from daehwa.types import Outcome, User

from .conftest import FakeProvider, Script


def model_labels(metrics: Metrics) -> set[str]:
    """Every ``model`` label value exported by /metrics."""
    return {
        sample.labels["model"]
        for family in metrics.registry.collect()
        for sample in family.samples
        if "model" in sample.labels
    }


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_turns_that_end_every_way_leave_no_tasks_behind(
    services: Services, fake_provider: FakeProvider, alice: User
) -> None:
    # A third of these turns fail: keep the breaker out of it, so that every turn reaches the provider.
    config = services.router.config
    services.router.config = replace(config, breaker=replace(config.breaker, min_requests=1000))
    await settle()
    tasks_before = len(asyncio.all_tasks())
    outcomes: list[Outcome] = []
    for round_ in range(10):
        fake_provider.enqueue(
            Script(chunks=["slow ", "enough ", "to flush"], delay=0.03),  # progress saves run in the background
            Script(chunks=["cut ", "off"], error=ProviderError("upstream broke", retryable=False)),  # interrupted
            Script(chunks=[], error=ProviderError("upstream down", retryable=False)),  # canned fallback reply
        )
        for _ in range(3):
            _, finished = await services.chat.run(TurnRequest(user=alice, content=f"question {round_}"))
            outcomes.append(finished.outcome)
        # The client leaves mid-reply: the partial reply is saved by a background task, which must be forgotten.
        fake_provider.enqueue(Script(chunks=["never ", "finished"], hang=True))
        async with aclosing(services.chat.turn(TurnRequest(user=alice, content="and leave"))) as events:
            async for event in events:
                if isinstance(event, TurnDelta):
                    break
    await services.chat.drain()
    await settle()

    assert set(outcomes) == {Outcome.OK, Outcome.INTERRUPTED, Outcome.FALLBACK}
    assert len(services.chat._background) == 0
    assert len(asyncio.all_tasks()) == tasks_before
    assert len(services.router.health()["breakers"]) == 1


async def test_made_up_model_names_keep_a_bounded_number_of_breakers_and_series(
    services: Services, alice: User
) -> None:
    services.metrics.unlisted_model_limit = 8
    configured = services.router.breaker("fake/echo")
    await services.chat.run(TurnRequest(user=alice, content="hello"))  # the configured model has its series

    # A provider passes any model name on (FakeProvider echoes them all), so each name is a real route.
    for i in range(40):
        _, finished = await services.chat.run(TurnRequest(user=alice, content="hi", model=f"fake/made-up-{i}"))
        assert finished.outcome is Outcome.OK

    breakers = {b.name for b in services.router.health()["breakers"]}  # type: ignore[union-attr]
    assert breakers == {"fake/echo", *(f"fake/made-up-{i}" for i in range(32, 40))}
    assert model_labels(services.metrics) == breakers
    assert services.router.breaker("fake/echo") is configured  # a flood of names never evicts a configured model
    assert b"made-up-0" not in services.metrics.render()

    # A name that was forgotten comes back with fresh state, and is bounded like the others.
    await services.chat.run(TurnRequest(user=alice, content="again", model="fake/made-up-0"))
    assert "fake/made-up-0" in model_labels(services.metrics)
    assert len(services.router.health()["breakers"]) == 9


def test_metrics_forget_the_least_recently_used_unlisted_model() -> None:
    metrics = Metrics(unlisted_model_limit=2)
    metrics.pin_models(["p/listed"])
    for name in ("p/listed", "p/a", "p/b"):
        label = metrics.model(name)
        metrics.upstream_requests.labels(label, "ok").inc()
        metrics.upstream_errors.labels(label, "upstream_unreachable").inc()
        metrics.ttft.labels(label).observe(0.1)
        metrics.tokens.labels(label, "prompt").inc(3)
    metrics.model("p/a")  # used again: now "p/b" is the least recently used
    metrics.model("p/c")

    assert model_labels(metrics) == {"p/listed", "p/a"}  # "p/c" has no series yet; "p/b" lost all of its own
    assert metrics.registry.get_sample_value("daehwa_tokens_total", {"model": "p/a", "kind": "prompt"}) == 3
    assert metrics.registry.get_sample_value("daehwa_tokens_total", {"model": "p/b", "kind": "prompt"}) is None
