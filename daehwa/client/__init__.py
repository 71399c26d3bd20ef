"""A thin typed client of daehwa's conversation API, sync and async, over httpx (docs/clients.md).

    from daehwa.client import DaehwaClient

    with DaehwaClient("http://127.0.0.1:8000", api_key="dh-...", language="ko") as client:
        conversation = client.create_conversation().conversation
        with client.stream(conversation.id, "안녕하세요!") as reply:
            for text in reply:
                print(text, end="", flush=True)
        print(reply.result.usage)

Errors are ``DaehwaAPIError`` with the server's ``code``, ``status`` and ``message``; a connection that breaks off
mid-reply is ``DaehwaConnectionError``, which ``resume_stream`` takes to get the rest of the reply.
"""

from __future__ import annotations

from ._async import AsyncDaehwaClient, AsyncReplyStream
from ._sync import DaehwaClient, ReplyStream
from ._wire import (
    Conversation,
    ConversationPage,
    ConversationStart,
    DaehwaAPIError,
    DaehwaConnectionError,
    Message,
    Model,
    Persona,
    ReplyUsage,
    Started,
    TurnResult,
    UsageReport,
    User,
)

__all__ = [
    "AsyncDaehwaClient",
    "AsyncReplyStream",
    "Conversation",
    "ConversationPage",
    "ConversationStart",
    "DaehwaAPIError",
    "DaehwaClient",
    "DaehwaConnectionError",
    "Message",
    "Model",
    "Persona",
    "ReplyStream",
    "ReplyUsage",
    "Started",
    "TurnResult",
    "UsageReport",
    "User",
]
