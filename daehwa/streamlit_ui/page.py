"""The Streamlit chat app on daehwa's REST/SSE API, through ``daehwa.client`` (docs/clients.md).

Streamlit runs this script again on every interaction. Each run reads the conversation list and the history from the
server, so a reload loses nothing; the session keeps only the login (a ``DaehwaClient``) and what is selected, and
the open conversation is in the URL (``?c=<id>``). A reply still being written when the page is drawn (the user
clicked elsewhere mid-reply, reloaded, or pressed Retry after a dropped connection) is followed live through the
resumable stream, so it is neither lost nor shown twice.

A message is sent exactly once: only on the run in which ``st.chat_input`` returns it; nothing else asks the model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from daehwa.client import (
    Conversation,
    DaehwaAPIError,
    DaehwaClient,
    DaehwaConnectionError,
    Message,
    ReplyStream,
    ReplyUsage,
    TurnResult,
)

from .texts import LANGUAGES, text

SERVER_ENV = "DAEHWA_STREAMLIT_SERVER"
API_KEY_ENV = "DAEHWA_STREAMLIT_API_KEY"
LANGUAGE_ENV = "DAEHWA_STREAMLIT_LANGUAGE"
DEFAULT_SERVER = "http://127.0.0.1:8000"

#: Errors of the model or its provider: shown as "the model is not answering", with the server's words under it.
MODEL_DOWN = frozenset(
    {
        "upstream_error",
        "model_unavailable",
        "provider_busy",
        "upstream_timeout",
        "upstream_incomplete",
        "model_not_found",
    }
)
#: Errors the server words for people in their language (quotas, the banned-word filter): shown as they come.
LOCALISED = frozenset({"content_blocked", "rate_limit_exceeded", "token_quota_exceeded"})


@dataclass
class Dropped:
    """A reply whose connection broke off: what arrived is shown until Retry gets the rest."""

    conversation_id: str
    message_id: str | None
    received: str


def lang() -> str:
    return str(st.session_state.get("language") or os.environ.get(LANGUAGE_ENV) or "ko")


def t(key: str, **values: object) -> str:
    return text(key, lang(), **values)


def server_url() -> str:
    return (os.environ.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/")


# -- errors ------------------------------------------------------------------------------------------------------
def show_error(exc: DaehwaAPIError) -> None:
    """An error as a person reads it, in their language; the server's own words under "Details" when they differ."""
    if isinstance(exc, DaehwaConnectionError):
        st.error(t("unreachable", server=server_url()))
        return
    if exc.code in LOCALISED or exc.status == 429:
        st.error(exc.message)
        return
    if exc.status == 401:
        st.session_state.pop("client", None)
        st.error(t("session_ended"))
        return
    if exc.code in MODEL_DOWN or (exc.status or 0) in (502, 503, 504):
        shown = t("model_down")
    elif exc.code == "not_found":
        shown = t("not_found")
    else:
        st.error(exc.message)
        return
    st.error(shown)
    with st.expander(t("details")):
        st.code(f"{exc.code}: {exc.message}", language=None)


# -- login -------------------------------------------------------------------------------------------------------
def current_client() -> DaehwaClient | None:
    client: DaehwaClient | None = st.session_state.get("client")
    if client is not None:
        client.language = lang()
        return client
    key = os.environ.get(API_KEY_ENV)
    if key:  # the key given on the command line: every new session (a reload too) is logged in at once
        try:
            return log_in(api_key=key)
        except DaehwaAPIError as exc:
            show_error(exc)
    return None


def log_in(*, api_key: str | None = None, username: str = "", password: str = "") -> DaehwaClient:
    client = DaehwaClient(server_url(), api_key=api_key or None, language=lang())
    try:
        user = client.me() if api_key else client.login(username, password)
    except BaseException:
        client.close()
        raise
    st.session_state["client"] = client
    st.session_state["user"] = user.name
    return client


def login_page() -> None:
    st.title(t("title"))
    st.write(t("login_intro", server=server_url()))
    by_key, by_password = st.tabs([t("with_key"), t("with_password")])
    with by_key:
        key = st.text_input(t("api_key"), type="password", key="login_key")
        if st.button(t("login"), key="login_with_key") and key.strip():
            _try_login(api_key=key.strip())
    with by_password:
        username = st.text_input(t("username"), key="login_user")
        password = st.text_input(t("password"), type="password", key="login_password")
        if st.button(t("login"), key="login_with_password") and username.strip():
            _try_login(username=username.strip(), password=password)


def _try_login(**credentials: str) -> None:
    try:
        log_in(**credentials)
    except DaehwaConnectionError as exc:
        show_error(exc)
    except DaehwaAPIError as exc:
        st.error(t("auth_failed") if exc.status in (400, 401, 403) else exc.message)
    else:
        st.rerun()


def log_out() -> None:
    client: DaehwaClient | None = st.session_state.pop("client", None)
    if client is not None:
        with contextlib.suppress(DaehwaAPIError):  # the session may have ended already
            client.logout()
        client.close()
    for key in ("user", "conversation_id", "dropped"):
        st.session_state.pop(key, None)
    st.query_params.clear()


# -- selection ---------------------------------------------------------------------------------------------------
def selected_conversation() -> str | None:
    chosen = st.session_state.get("conversation_id")
    if chosen is None and "c" in st.query_params:  # a reload: the URL says which conversation was open
        chosen = st.query_params["c"]
        st.session_state["conversation_id"] = chosen
    return str(chosen) if chosen else None


def open_conversation(conversation_id: str | None) -> None:
    st.session_state["conversation_id"] = conversation_id
    st.session_state.pop("dropped", None)
    if conversation_id:
        st.query_params["c"] = conversation_id
    else:
        st.query_params.clear()


def stop_reply() -> None:
    """The Stop button: the server stops the reply and stores what was written (from any request, any process)."""
    client: DaehwaClient | None = st.session_state.get("client")
    conversation_id = st.session_state.get("conversation_id")
    if client is None or not conversation_id:
        return
    try:
        st.session_state["stop_notice"] = "stopped_now" if client.stop(conversation_id) else "nothing_to_stop"
    except DaehwaAPIError as exc:
        st.session_state["stop_error"] = exc


def sidebar(client: DaehwaClient, conversation_id: str | None) -> DeltaGenerator:
    """The sidebar: language, user, New chat, persona and model pickers (for new conversations and the next
    message; ``st.session_state["persona"]``, ``["model"]``, None for the server's default), Stop.

    Returns the place of the conversation list, filled by ``conversation_list`` once the page is drawn (so a title
    the first message gave is already in it)."""
    with st.sidebar:
        st.selectbox(t("language"), list(LANGUAGES), format_func=LANGUAGES.__getitem__, key="language")
        st.caption(t("signed_in_as", name=st.session_state.get("user", "")))
        st.button(t("logout"), key="logout", on_click=log_out)
        st.button(t("new_chat"), key="new_chat", on_click=open_conversation, args=(None,), type="primary")
        try:
            personas = client.personas()
            models = [m for m in client.models() if m.available]
        except DaehwaAPIError as exc:
            show_error(exc)
            personas, models = [], []
        if personas:
            names = [p.name for p in personas]
            titles = {p.name: p.title for p in personas}
            st.selectbox(t("persona"), names, format_func=titles.__getitem__, key="persona")
        choices: list[str | None] = [None, *(m.id for m in models)]
        default = models[0].id if models else "?"
        st.selectbox(t("model"), choices, format_func=lambda m: m or t("default_model", model=default), key="model")
        st.button(t("stop"), key="stop", on_click=stop_reply, disabled=conversation_id is None)
        notice = st.session_state.pop("stop_notice", None)
        if notice:
            st.caption(t(notice))
        stop_error = st.session_state.pop("stop_error", None)
        if stop_error is not None:
            show_error(stop_error)
        st.subheader(t("conversations"))
        return st.container()


def conversation_list(box: DeltaGenerator, client: DaehwaClient, conversation_id: str | None) -> None:
    with box:
        try:
            conversations = client.list_conversations(limit=50)
        except DaehwaAPIError as exc:
            show_error(exc)
            return
        if not conversations:
            st.caption(t("no_conversations"))
        for conversation in conversations:
            st.button(
                conversation.title or conversation.id,
                key=f"open_{conversation.id}",
                on_click=open_conversation,
                args=(conversation.id,),
                type="primary" if conversation.id == conversation_id else "secondary",
                width="stretch",
            )


# -- messages ----------------------------------------------------------------------------------------------------
def usage_line(usage: ReplyUsage | None) -> str | None:
    if usage is None:
        return None
    cost = f"${usage.cost:.6f}" if usage.cost is not None else t("cost_unknown")
    return t(
        "usage", prompt=usage.prompt_tokens, completion=usage.completion_tokens, total=usage.total_tokens, cost=cost
    )


def show_status(message: Message, *, stopped: bool = False) -> None:
    """The notes under a reply: how it ended, its error, its usage."""
    if message.status == "interrupted":
        st.caption(t("status_stopped") if stopped else t("status_interrupted"))
    elif message.status == "blocked":
        st.caption(t("status_blocked"))
    elif message.status == "fallback":
        st.caption(t("status_fallback"))
    if message.role == "assistant" and message.error_code and message.status in ("error", "interrupted"):
        show_error(DaehwaAPIError(message.error_message or "", code=message.error_code))
    line = usage_line(message.usage)
    if line:
        st.caption(line)


def show_message(message: Message) -> None:
    with st.chat_message("user" if message.role == "user" else "assistant"):
        if message.content:
            st.markdown(message.content)
        show_status(message)


class Follow:
    """The text deltas of a reply for ``st.write_stream``, ending quietly when the connection drops (the error is
    kept in ``dropped``), so what arrived stays on the page."""

    def __init__(self, reply: ReplyStream) -> None:
        self.reply = reply
        self.dropped: DaehwaConnectionError | None = None
        self.failed: DaehwaAPIError | None = None
        self._deltas = iter(reply)
        self.first: str | None = None

    def wait_first(self) -> None:
        """Read up to the first delta (under the "thinking" spinner)."""
        self.first = self._next()

    def _next(self) -> str | None:
        try:
            return next(self._deltas, None)
        except DaehwaConnectionError as exc:
            self.dropped = exc
        except DaehwaAPIError as exc:  # the model failed before writing anything
            self.failed = exc
        return None

    def __iter__(self) -> Iterator[str]:
        if self.first is not None:
            yield self.first
            while (delta := self._next()) is not None:
                yield delta

    @property
    def result(self) -> TurnResult | None:
        return self.reply.result


def stream_reply(open_reply: Callable[[], ReplyStream]) -> ReplyStream | None:
    """Inside an assistant bubble: the "thinking" spinner while the reply opens and until its first token, then the
    streamed text and its notes. Returns the stream (None when it could not be opened: the error is shown)."""
    try:
        with st.spinner(t("thinking")):
            reply = open_reply()
            follow = Follow(reply)
            follow.wait_first()
    except DaehwaAPIError as exc:  # found before the turn started: quota, blocked message, unknown conversation
        show_error(exc)
        return None
    try:
        written = st.write_stream(follow) if follow.first is not None else ""
    finally:
        reply.close()
    if follow.dropped is not None:
        received = written if isinstance(written, str) else ""
        st.session_state["dropped"] = Dropped(reply.conversation_id, reply.message_id, received)
        st.warning(t("dropped"))
        st.button(t("retry"), key="retry")  # a rerun: the page follows the reply again from the server
        return reply
    st.session_state.pop("dropped", None)
    if follow.failed is not None:
        show_error(follow.failed)
    elif follow.result is not None:
        show_status(follow.result.message, stopped=follow.result.stopped)
    return reply


def follow_live(client: DaehwaClient, message: Message) -> None:
    """A reply the server is still writing: all of it from its start (the chunk log), live, then its notes."""
    with st.chat_message("assistant"):
        stream_reply(lambda: client.resume_stream(message.conversation_id, message.id, after=0))


def show_dropped(dropped: Dropped) -> None:
    """The server cannot be reached for the history: keep showing the part of the reply that had arrived."""
    if dropped.received:
        with st.chat_message("assistant"):
            st.markdown(dropped.received)
            st.warning(t("dropped"))
            st.button(t("retry"), key="retry")


def send(client: DaehwaClient, conversation_id: str, prompt: str, model: str | None) -> Conversation | None:
    """The user's message and the streamed reply; the conversation as the turn left it (a first message names it)."""
    with st.chat_message("user"):
        st.markdown(prompt)
    with st.chat_message("assistant"):
        reply = stream_reply(lambda: client.stream(conversation_id, prompt, model=model))
    return reply.started.conversation if reply is not None and reply.started else None


def conversation_view(client: DaehwaClient, conversation_id: str, prompt: str | None, model: str | None) -> None:
    try:
        page = client.get_conversation(conversation_id)
    except DaehwaAPIError as exc:
        dropped: Dropped | None = st.session_state.get("dropped")
        if isinstance(exc, DaehwaConnectionError) and dropped and dropped.conversation_id == conversation_id:
            show_dropped(dropped)
        show_error(exc)
        if exc.code == "not_found":
            open_conversation(None)
        return
    head = st.empty()
    with head.container():
        header(page.conversation)
    if not page.messages and not prompt:
        st.caption(t("empty"))
    for message in page.messages:
        if message.role == "assistant" and message.status == "streaming":
            follow_live(client, message)
        else:
            show_message(message)
    if prompt:
        named = send(client, conversation_id, prompt, model)
        if named is not None and named.title != page.conversation.title:
            with head.container():
                header(named)


def header(conversation: Conversation) -> None:
    st.subheader(conversation.title or t("title"))
    if conversation.persona or conversation.model:
        st.caption(" · ".join(x for x in (conversation.persona, conversation.model) if x))


def new_conversation(client: DaehwaClient, persona: str | None, model: str | None) -> str | None:
    try:
        start = client.create_conversation(persona=persona, model=model)
    except DaehwaAPIError as exc:
        show_error(exc)
        return None
    open_conversation(start.conversation.id)
    return start.conversation.id


def main() -> None:
    """One run of the app."""
    st.set_page_config(page_title="daehwa", page_icon="💬")
    if "language" not in st.session_state:
        st.session_state["language"] = lang()
    client = current_client()
    if client is None:
        login_page()
        return
    # The prompt is read first (the box is drawn at the bottom wherever it is called) so that a first message's new
    # conversation is open at once. The box is disabled while a reply streams: a message
    # sent meanwhile would interrupt the script, and with it the stream on the page.
    typed = st.chat_input(t("placeholder"), key="prompt", submit_mode="disable")
    prompt = typed if isinstance(typed, str) and typed.strip() else None
    conversation_id = selected_conversation()
    if prompt and conversation_id is None:
        conversation_id = new_conversation(client, st.session_state.get("persona"), st.session_state.get("model"))
        if conversation_id is None:
            prompt = None
    listed = sidebar(client, conversation_id)
    if st.session_state.get("client") is None:  # the login ended while drawing the sidebar
        st.rerun()
    try:
        if conversation_id is None:
            st.title(t("title"))
            st.caption(t("empty"))
        else:
            conversation_view(client, conversation_id, prompt, st.session_state.get("model"))
    except DaehwaAPIError as exc:
        show_error(exc)
    conversation_list(listed, client, st.session_state.get("conversation_id"))


def run() -> None:
    """``main`` with no traceback ever shown: an unexpected error is one line in the user's language."""
    try:
        main()
    except Exception as exc:  # Streamlit's own rerun and stop signals are BaseExceptions and pass through
        st.error(t("unexpected", detail=type(exc).__name__))
