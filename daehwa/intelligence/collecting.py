"""The form step of the turn pipeline (a ``TurnContributor``) and the completed form's webhook.

For a persona with a ``[form]``, each user message is read by the extractor, the form's state machine advances, and
the reply is the machine's next question, re-ask or confirmation, set as ``turn.reply_override`` (so the model is
not called and a small local model's form is as reliable as a large one's). When the user confirms, the record is
stored (``FormStore``) and, if the form names a webhook, POSTed in the background with retries and backoff; a
webhook that keeps failing is logged, counted (``daehwa_form_webhook_failures_total``) and marked ``failed`` on the
record, and never delays or changes the reply. Once the form is done (or cancelled) the model answers again, told
about the record in a system part. The state lives in the conversation's meta (``"form"``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

import httpx

from ..stores.base import FormRecord, NewFormRecord
from .extract import Extractor
from .forms import META_KEY, FormMachine, FormSpec, FormState, Webhook, detect_locale, progress

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..pipeline import Turn
    from ..stores.base import Store

log = logging.getLogger(__name__)


class FormWebhooks:
    """POSTs completed forms in the background: retries on network errors, 429 and 5xx, with doubling backoff."""

    def __init__(self, store: Store, metrics: Metrics, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self.transport = transport  # tests pass a MockTransport; production uses the network
        self._tasks: set[asyncio.Task[bool]] = set()

    def send(self, hook: Webhook, record: FormRecord) -> None:
        task = asyncio.create_task(self.deliver(hook, record), name=f"daehwa-form-webhook-{record.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver(self, hook: Webhook, record: FormRecord) -> bool:
        """Deliver one record; True once the endpoint answered 2xx. Never raises."""
        payload = {
            "form": record.form,
            "record_id": record.id,
            "conversation_id": record.conversation_id,
            "user_id": record.user_id,
            "values": dict(record.values),
            "created_at": record.created_at.isoformat(),
        }
        problem = ""
        async with httpx.AsyncClient(transport=self.transport, timeout=hook.timeout_seconds) as client:
            for attempt in range(hook.retries + 1):
                if attempt:
                    await asyncio.sleep(hook.backoff_seconds * 2 ** (attempt - 1))
                try:
                    response = await client.post(hook.url, json=payload, headers={"X-Daehwa-Form": record.form})
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                    continue
                if response.is_success:
                    await self._mark(record, "delivered")
                    return True
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    break  # the endpoint refused this payload: sending it again will not help
        log.warning(
            "form webhook failed after %d attempt(s): %s",
            attempt + 1,
            problem,
            extra={"form": record.form, "record_id": record.id},
        )
        self.metrics.form_webhook_failures.labels(record.form).inc()
        await self._mark(record, "failed")
        return False

    async def _mark(self, record: FormRecord, delivery: str) -> None:
        try:
            await self.store.set_form_delivery(record.user_id, record.id, delivery)
        except Exception as exc:
            log.warning("could not record the form webhook's outcome: %s", exc)

    async def drain(self) -> None:
        """Wait for the deliveries in flight (shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class FormCollector:
    """The pipeline's form step (``TurnContributor``)."""

    name = "forms"

    def __init__(
        self,
        store: Store,
        extractor: Extractor,
        webhooks: FormWebhooks,
        metrics: Metrics,
        *,
        today: Callable[[], date] | None = None,
        default_model: str | None = None,
    ) -> None:
        from .forms import today_in

        self.store = store
        self.extractor = extractor
        self.webhooks = webhooks
        self.metrics = metrics
        self.today = today or today_in
        self.default_model = default_model

    def applies(self, turn: Turn) -> bool:
        return turn.persona is not None and turn.persona.form is not None and not turn.stateless

    async def contribute(self, turn: Turn) -> None:
        spec = turn.persona.form if turn.persona is not None else None
        if spec is None or turn.conversation is None or turn.stateless:
            return
        machine = FormMachine(spec)
        meta: Mapping[str, Any] = turn.conversation.meta or {}
        state = FormState.from_meta(meta.get(META_KEY), spec)
        if turn.content is None:  # regenerate: say the current question again
            if state is not None and state.status in ("collecting", "confirming"):
                turn.reply_override = machine.question(state)
            return
        today = self.today()
        if state is None:
            state = machine.start(detect_locale(turn.content, (turn.request.locale or "ko")[:2]))
        model = turn.model or self.default_model
        candidates = await self.extractor.extract(spec, state, turn.content, today, model=model)
        step = machine.advance(state, turn.content, candidates, today)
        new = step.state
        if step.completed:
            record = await self._complete(turn, spec, new)
            new.record_id = record.id if record is not None else None
            new.delivery = record.delivery if record is not None else None
        await self.store.update_conversation(turn.user.id, turn.conversation.id, meta={META_KEY: new.to_meta()})
        turn.conversation = _with_meta(turn.conversation, {**meta, META_KEY: new.to_meta()})
        reply = machine.completion(new) if step.completed else step.reply
        if reply:
            turn.reply_override = reply
        elif new.status == "done":
            turn.system_parts.append(
                f"The user's {spec.name} is complete (reference {new.record_id}):\n{machine.summary(new, 'en')}\n"
                "Answer questions about it briefly; a new one starts when the user says 'new reservation' / '새 예약'."
            )
        turn.reply_meta[META_KEY] = {
            "status": new.status,
            "next": progress(spec, new, new.locale)["next"],
            "record_id": new.record_id,
            "errors": dict(step.errors),
        }

    async def _complete(self, turn: Turn, spec: FormSpec, state: FormState) -> FormRecord | None:
        assert turn.conversation is not None
        record = await self.store.save_form_record(
            turn.user.id,
            NewFormRecord(
                turn.conversation.id, spec.name, dict(state.values), delivery="pending" if spec.webhook else None
            ),
        )
        if record is None:
            return None
        self.metrics.forms_completed.labels(spec.name).inc()
        log.info("form completed", extra={"form": spec.name, "record_id": record.id})
        if spec.webhook is not None:
            self.webhooks.send(spec.webhook, record)
        return record


def _with_meta(conversation: Any, meta: Mapping[str, Any]) -> Any:
    from dataclasses import replace

    try:
        return replace(conversation, meta=dict(meta))
    except TypeError:
        return conversation
