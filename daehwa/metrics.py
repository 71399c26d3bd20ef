"""Prometheus metrics, one registry per app (no process globals, so tests and several apps never share counters)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)

#: How many models that are not configured anywhere keep their own series (and circuit breakers, in the router).
#: A provider passes any model name through to its upstream, so without a bound a client sending made-up names
#: would add series (a histogram is ~20 samples) to every scrape and to memory, forever.
UNLISTED_MODEL_LIMIT = 256


class Metrics:
    """The service's counters, gauges and histograms. ``render()`` gives the /metrics text."""

    def __init__(self, *, unlisted_model_limit: int = UNLISTED_MODEL_LIMIT) -> None:
        self.unlisted_model_limit = unlisted_model_limit
        self._pinned_models: set[str] = set()
        self._unlisted_models: OrderedDict[str, None] = OrderedDict()  # least recently used first
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.turns = Counter(
            "daehwa_turns", "Turns handled, by transport and outcome.", ["source", "outcome"], registry=r
        )
        self.errors = Counter("daehwa_errors", "Errors, by kind (error code).", ["kind"], registry=r)
        self.upstream_requests = Counter(
            "daehwa_upstream_requests",
            "Calls to model providers, by model and result.",
            ["model", "result"],
            registry=r,
        )
        self.ttft = Histogram(
            "daehwa_time_to_first_token_seconds",
            "Time from the turn's start to the first text delivered.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.turn_latency = Histogram(
            "daehwa_turn_duration_seconds", "Total time of a turn.", ["model"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.tokens = Counter("daehwa_tokens", "Tokens used, by model and kind.", ["model", "kind"], registry=r)
        self.active_streams = Gauge("daehwa_active_streams", "Replies being generated right now.", registry=r)
        self.filter_hits = Counter(
            "daehwa_filter_hits", "Banned-word matches, by direction and action.", ["direction", "action"], registry=r
        )
        self.breaker_state = Gauge(
            "daehwa_circuit_breaker_state",
            "Circuit breaker state per model: 0 closed, 1 half-open, 2 open.",
            ["model"],
            registry=r,
        )
        self.rate_limited = Counter(
            "daehwa_rate_limited", "Requests refused by a per-user quota, by limit.", ["limit"], registry=r
        )

        # -- resilience (daehwa.routing) ------------------------------------------------------------------------
        self.upstream_errors = Counter(
            "daehwa_upstream_errors",
            "Failed calls to model providers, by model and kind (error code).",
            ["model", "kind"],
            registry=r,
        )
        self.retries = Counter(
            "daehwa_upstream_retries", "Calls retried after a retryable error.", ["model"], registry=r
        )
        self.fallbacks = Counter(
            "daehwa_fallbacks",
            "Turns answered by a fallback: kind 'model' (a fallback model) or 'reply' (the canned reply).",
            ["kind"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "daehwa_circuit_breaker_transitions",
            "Circuit breaker state changes, by model and the state entered.",
            ["model", "state"],
            registry=r,
        )
        self.bulkhead_active = Gauge(
            "daehwa_bulkhead_active", "Requests running against each provider right now.", ["provider"], registry=r
        )

        self.context_failures = Counter(
            "daehwa_context_failures",
            "Background context work that failed and is retried after the next turn (embedding, summary, ...).",
            ["task"],
            registry=r,
        )
        self.pipeline_hook_failures = Counter(
            "daehwa_pipeline_hook_failures",
            "Turn contributors and observers that raised or ran out of time (ignored), by hook name.",
            ["hook"],
            registry=r,
        )

        # -- forms (daehwa.intelligence.forms) -------------------------------------------------------------------
        self.forms_completed = Counter(
            "daehwa_forms_completed", "Forms completed and stored, by form.", ["form"], registry=r
        )
        self.form_extract_failures = Counter(
            "daehwa_form_extract_failures", "Model extractions of a form value that failed or timed out.", registry=r
        )
        self.form_webhook_failures = Counter(
            "daehwa_form_webhook_failures",
            "Form webhooks given up on after their retries, by form.",
            ["form"],
            registry=r,
        )

        #: Every metric with a ``model`` label (always the first label), to remove a model's series.
        self._by_model: tuple[Counter | Gauge | Histogram, ...] = (
            self.upstream_requests,
            self.ttft,
            self.turn_latency,
            self.tokens,
            self.breaker_state,
            self.upstream_errors,
            self.retries,
            self.breaker_transitions,
        )

    def pin_models(self, names: Iterable[str]) -> None:
        """Models whose series are always kept: the configured ones (the router pins them)."""
        for name in names:
            self._pinned_models.add(name)
            self._unlisted_models.pop(name, None)

    def model(self, name: str) -> str:
        """``name`` as a ``model`` label value; call it for every labelled update. Past ``unlisted_model_limit``
        models that are not pinned, the least recently used one's series are removed (a client may send any name)."""
        if name in self._pinned_models:
            return name
        recent = self._unlisted_models
        if name in recent:
            recent.move_to_end(name)
            return name
        recent[name] = None
        while len(recent) > self.unlisted_model_limit:
            old, _ = recent.popitem(last=False)
            self._remove_model(old)
        return name

    def _remove_model(self, name: str) -> None:
        for metric in self._by_model:
            remove_by_labels = getattr(metric, "remove_by_labels", None)
            if remove_by_labels is not None:
                remove_by_labels({"model": name})
                continue
            # Older prometheus-client: find the model's label sets among the children (cheap: no samples are built).
            for key in [key for key in list(metric._metrics) if key[0] == name]:
                metric.remove(*key)

    def render(self) -> bytes:
        return generate_latest(self.registry)
