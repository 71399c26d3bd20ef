"""A language tutor that speaks first, in the style of django-pyhub-ai's AgentChatConsumer examples."""

from __future__ import annotations

from typing import Any, ClassVar

from daehwa.django.consumers import DaehwaChatConsumer


class LanguageTutorConsumer(DaehwaChatConsumer):
    """Role-play in the target language at the learner's level; logged-in users only (the default)."""

    temperature = 1.0
    system_prompt_template = """
You are a friendly language tutor. We talk in {언어} only: do not translate and do not explain pronunciation.
We role-play this situation: "{상황}". Use words and expressions that suit a {레벨} learner of {언어}.
The learner's name is {user_name}.
"""
    first_user_message_template = "첫 문장으로 대화를 시작해주세요."
    prompt_context_data: ClassVar[dict[str, Any]] = {
        "언어": "영어",
        "상황": "스타벅스에서 커피를 주문하는 상황",
        "레벨": "초급",
    }
    title = "영어 튜터"


class GuestTutorConsumer(LanguageTutorConsumer):
    """The same tutor for anyone: a guest keeps one conversation per browser session."""

    conversation_key = "tutor.guest"

    def get_context_data(self) -> dict[str, Any]:
        return {**super().get_context_data(), "user_name": "guest"}

    async def can_accept(self) -> bool:
        return True
