"""Metric names and values after a known sequence of turns, GET /metrics and /api/usage, ``daehwa usage``, the price
table, and the JSON logs (request id, no secrets, no message text)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from typer.testing import CliRunner

from daehwa.chat import TurnRequest
from daehwa.cli import app as cli_app
from daehwa.config import Settings
from daehwa.errors import ConfigError, InvalidRequest, ProviderError
from daehwa.logs import JsonFormatter, Redactor, bind_request_id, configure_logging
from daehwa.pricing import BUILTIN_PRICES, PriceTable, load_prices, parse_since
from daehwa.services import Services
from daehwa.types import Usage, User
from tests.api_helpers import auth

from .conftest import FakeProvider, Script

pytest_plugins = ["tests.api_fixtures"]


def value(services: Services, name: str, **labels: str) -> float:
    return services.metrics.registry.get_sample_value(name, labels) or 0.0


async def known_sequence(services: Services, user: User, fake: FakeProvider) -> None:
    """Two good turns, one retried, one where every try fails (canned reply), one broken mid-way."""
    fake.enqueue(
        Script(chunks=["Hello", " there"], usage=Usage(10, 2)),
        Script(chunks=["Again"], usage=Usage(20, 1)),
        Script(chunks=[], error=ProviderError("503", retryable=True)),
        Script(chunks=["Retried"], usage=Usage(5, 1)),
        *(Script(chunks=[], error=ProviderError("503", retryable=True)) for _ in range(3)),
        Script(chunks=["Half"], error=ProviderError("reset", code="upstream_unreachable")),
    )
    started, _ = await services.chat.run(TurnRequest(user=user, content="one", source="rest"))
    cid = started.conversation.id
    for content in ("two", "three", "four", "five"):
        await services.chat.run(TurnRequest(user=user, content=content, conversation_id=cid, source="ws"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        default_model="fake",
        stream_flush_seconds=0.05,
        retry_base_delay=0.0,
        filter_output_action="off",
        _env_file=None,  # type: ignore[call-arg]
    )


async def test_metric_values_after_a_known_sequence(services: Services, alice: User, fake_provider: FakeProvider):
    await known_sequence(services, alice, fake_provider)
    assert value(services, "daehwa_turns_total", source="rest", outcome="ok") == 1
    assert value(services, "daehwa_turns_total", source="ws", outcome="ok") == 2
    assert value(services, "daehwa_turns_total", source="ws", outcome="fallback") == 1
    assert value(services, "daehwa_turns_total", source="ws", outcome="interrupted") == 1
    assert value(services, "daehwa_upstream_requests_total", model="fake/echo", result="ok") == 3
    assert value(services, "daehwa_upstream_requests_total", model="fake/echo", result="error") == 5
    assert value(services, "daehwa_upstream_errors_total", model="fake/echo", kind="upstream_error") == 4
    assert value(services, "daehwa_upstream_errors_total", model="fake/echo", kind="upstream_unreachable") == 1
    assert value(services, "daehwa_upstream_retries_total", model="fake/echo") == 3
    assert value(services, "daehwa_fallbacks_total", kind="reply") == 1
    assert value(services, "daehwa_errors_total", kind="upstream_unreachable") == 1  # the interrupted turn
    assert value(services, "daehwa_tokens_total", model="fake/echo", kind="prompt") >= 35
    assert value(services, "daehwa_tokens_total", model="fake/echo", kind="completion") >= 4
    # Time to first token is observed for model text only (3 good turns + the interrupted one), not the canned reply.
    assert value(services, "daehwa_time_to_first_token_seconds_count", model="fake/echo") == 4
    assert value(services, "daehwa_turn_duration_seconds_count", model="fake/echo") == 5
    assert value(services, "daehwa_active_streams") == 0
    assert value(services, "daehwa_bulkhead_active", provider="fake") == 0
    assert value(services, "daehwa_circuit_breaker_state", model="fake/echo") == 0  # 5 of 8 failed, min is 10


async def test_the_breaker_state_metric_follows_the_breaker(
    services: Services, alice: User, fake_provider: FakeProvider
):
    fake_provider.enqueue(*(Script(chunks=[], error=ProviderError("down", retryable=True)) for _ in range(12)))
    for _ in range(4):
        await services.chat.run(TurnRequest(user=alice, content="hi"))
    assert services.router.model_state("fake") == "open"
    assert value(services, "daehwa_circuit_breaker_state", model="fake/echo") == 2
    assert value(services, "daehwa_circuit_breaker_transitions_total", model="fake/echo", state="open") == 1


async def test_get_metrics_serves_the_prometheus_text(
    client: httpx.AsyncClient, services: Services, alice: User, fake_provider: FakeProvider
):
    await known_sequence(services, alice, fake_provider)
    response = await client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in (
        "daehwa_turns",
        "daehwa_errors",
        "daehwa_upstream_requests",
        "daehwa_upstream_errors",
        "daehwa_time_to_first_token_seconds",
        "daehwa_turn_duration_seconds",
        "daehwa_tokens",
        "daehwa_circuit_breaker_state",
        "daehwa_filter_hits",
        "daehwa_active_streams",
        "daehwa_rate_limited",
        "daehwa_fallbacks",
    ):
        assert name in families, name
    ttft = families["daehwa_time_to_first_token_seconds"]
    assert ttft.type == "histogram"
    assert any(s.name.endswith("_bucket") and s.labels.get("le") == "8.0" for s in ttft.samples)


async def test_metrics_can_require_a_token(services: Services, client: httpx.AsyncClient):
    services.settings.metrics_token = SecretStr("s3cret-metrics")
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers=auth("wrong"))).status_code == 401
    assert (await client.get("/metrics", headers=auth("s3cret-metrics"))).status_code == 200


# -- usage -------------------------------------------------------------------------------------------------------
async def test_api_usage_reports_totals_per_user_and_model(
    client: httpx.AsyncClient, services: Services, alice: User, bob: User, alice_key: str, bob_key: str, accounts
):
    services.chat.pricing = PriceTable({"fake/*": BUILTIN_PRICES["openai/gpt-4o-mini"]})
    fake: FakeProvider = services.providers.get("fake")  # type: ignore[assignment]
    fake.enqueue(Script(chunks=["a"], usage=Usage(1000, 200)), Script(chunks=["b"], usage=Usage(3000, 800)))
    await services.chat.run(TurnRequest(user=alice, content="x"))
    await services.chat.run(TurnRequest(user=bob, content="y"))

    mine = (await client.get("/api/usage", headers=auth(alice_key))).json()
    assert [(r["user"], r["model"], r["turns"], r["total_tokens"]) for r in mine["totals"]] == [
        ("alice", "fake/echo", 1, 1200)
    ]
    assert mine["totals"][0]["cost"] == pytest.approx((1000 * 0.15 + 200 * 0.60) / 1e6)
    assert mine["sum"]["total_tokens"] == 1200 and mine["currency"] == "USD"

    refused = await client.get("/api/usage?user=bob", headers=auth(alice_key))
    assert refused.status_code == 403
    bad = await client.get("/api/usage?since=last-tuesday", headers=auth(alice_key))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "since"
    future = (await client.get("/api/usage?since=2999-01-01", headers=auth(alice_key))).json()
    assert future["totals"] == [] and future["sum"]["turns"] == 0

    admin = await services.store.create_user("root", password_hash=None, is_admin=True)
    admin_key = (await accounts.create_api_key(admin.id, "t")).secret
    everyone = (await client.get("/api/usage", headers=auth(admin_key))).json()
    assert {r["user"] for r in everyone["totals"]} == {"alice", "bob"}
    assert everyone["sum"]["total_tokens"] == 5000
    only_bob = (await client.get("/api/usage?user=bob&since=7d", headers=auth(admin_key))).json()
    assert [r["user"] for r in only_bob["totals"]] == ["bob"]
    assert (await client.get("/api/usage?user=nobody", headers=auth(admin_key))).status_code == 404


async def test_daehwa_usage_prints_totals(
    services: Services, alice: User, bob: User, settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    await services.chat.run(TurnRequest(user=alice, content="x"))
    await services.chat.run(TurnRequest(user=bob, content="y"))
    monkeypatch.setenv("DAEHWA_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("DAEHWA_DATABASE_URL", settings.resolved_database_url())
    monkeypatch.chdir(settings.data_dir)
    runner = CliRunner()
    # The command runs its own event loop, so it runs in a thread here, as it would in its own process.
    result = await asyncio.to_thread(runner.invoke, cli_app, ["usage", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {r["user"] for r in report["totals"]} == {"alice", "bob"}
    assert report["sum"]["turns"] == 2
    result = await asyncio.to_thread(runner.invoke, cli_app, ["usage", "--user", "alice", "--since", "today"])
    assert result.exit_code == 0 and "alice" in result.output and "bob" not in result.output
    assert "fake/echo" in result.output


# -- pricing -----------------------------------------------------------------------------------------------------
def test_price_table_exact_patterns_and_unknown(tmp_path: Path):
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[models."openai/gpt-4o-mini"]\ninput = 1.0\noutput = 2.0\n\n[models."vllm/*"]\ninput = 0\noutput = 0\n'
    )
    table = PriceTable.from_settings(prices)
    assert table.cost("openai/gpt-4o-mini", Usage(1_000_000, 500_000)) == pytest.approx(2.0)  # the file wins
    assert table.cost("openai/gpt-4o", Usage(1_000_000, 0)) == pytest.approx(2.5)  # built in
    assert table.cost("vllm/llama", Usage(10, 10)) == 0.0
    assert table.cost("local/qwen2.5-1.5b", Usage(10, 10)) == 0.0
    assert table.cost("mystery/model", Usage(10, 10)) is None  # unknown, not free


def test_price_file_errors_name_the_problem(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[models."x/y"]\ninput = "cheap"\n')
    with pytest.raises(ConfigError, match="must be numbers"):
        load_prices(bad)
    bad.write_text('[models."x/y"]\nprompt = 1\n')
    with pytest.raises(ConfigError, match="only input and output"):
        load_prices(bad)
    with pytest.raises(ConfigError, match="DAEHWA_PRICES_FILE"):
        load_prices(tmp_path / "missing.toml")
    bad.write_text("[models\n")
    with pytest.raises(ConfigError, match=r"Price file .*bad\.toml is not valid TOML"):
        load_prices(bad)


def test_parse_since():
    from datetime import UTC, datetime

    now = datetime(2026, 11, 21, 15, 30, tzinfo=UTC)
    assert parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("today", now=now) == datetime(2026, 11, 21, tzinfo=UTC)
    assert parse_since("24h", now=now) == datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
    assert parse_since(None) is None
    with pytest.raises(InvalidRequest):
        parse_since("soon")


# -- logs --------------------------------------------------------------------------------------------------------
def test_json_logs_carry_the_request_id_and_extra_fields_but_no_text_or_secrets(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-abcdefghijklmnop1234")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    stream = io.StringIO()
    handler = configure_logging(settings, stream=stream)
    try:
        log = logging.getLogger("daehwa.test")
        with bind_request_id("req-42"):
            log.info(
                "turn finished",
                extra={"model": "local", "outcome": "ok", "content": "my secret diary", "ttft_ms": 12.5},
            )
            log.warning("upstream said: bad key sk-proj-abcdefghijklmnop1234 (Bearer abcdefghijklmnopqrstuv)")
        log.info("outside")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    first, second, third = lines
    assert first["message"] == "turn finished" and first["request_id"] == "req-42"
    assert (first["model"], first["outcome"], first["ttft_ms"], first["level"]) == ("local", "ok", 12.5, "info")
    assert "content" not in first and "my secret diary" not in stream.getvalue()
    assert "sk-proj-abcdefghijklmnop1234" not in second["message"] and "[redacted]" in second["message"]
    assert "abcdefghijklmnopqrstuv" not in second["message"]
    assert "request_id" not in third


@pytest.mark.parametrize(("level", "shown"), [("info", False), ("debug", True)])
def test_the_http_clients_request_lines_are_written_only_at_debug(level: str, shown: bool) -> None:
    settings = Settings(_env_file=None, log_level=level)  # type: ignore[call-arg]
    stream = io.StringIO()
    handler = configure_logging(settings, stream=stream)
    try:
        logging.getLogger("httpx2").info('HTTP Request: POST http://up/v1/chat/completions "HTTP/1.1 200 OK"')
        logging.getLogger("httpx2").warning("upstream connection reset")
        logging.getLogger("daehwa.chat").info("turn finished")
    finally:
        logging.getLogger().removeHandler(handler)
        for name in ("httpx", "httpx2", "httpcore", "httpcore2"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    messages = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert ("HTTP Request" in messages[0]) is shown
    assert messages[-2:] == ["upstream connection reset", "turn finished"]


def test_message_text_is_logged_only_when_asked():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.content = "hello"
    assert "hello" not in JsonFormatter().format(record)
    assert json.loads(JsonFormatter(include_text=True).format(record))["content"] == "hello"
    assert Redactor(["hunter2-password"])("pw hunter2-password") == "pw [redacted]"
