"""What the Streamlit app says, in Korean and English (the server's own messages come localised from the server)."""

from __future__ import annotations

from ..i18n import pick

LANGUAGES = {"ko": "한국어", "en": "English"}

TEXTS: dict[str, dict[str, str]] = {
    "title": {"ko": "daehwa 대화", "en": "daehwa chat"},
    "login": {"ko": "로그인", "en": "Log in"},
    "login_intro": {
        "ko": "{server} 에 로그인하세요. API 키나 사용자 이름과 비밀번호를 쓸 수 있어요.",
        "en": "Log in to {server} with an API key or a user name and password.",
    },
    "api_key": {"ko": "API 키", "en": "API key"},
    "username": {"ko": "사용자 이름", "en": "User name"},
    "password": {"ko": "비밀번호", "en": "Password"},
    "with_key": {"ko": "API 키로", "en": "With an API key"},
    "with_password": {"ko": "비밀번호로", "en": "With a password"},
    "logout": {"ko": "로그아웃", "en": "Log out"},
    "signed_in_as": {"ko": "{name} 님", "en": "Signed in as {name}"},
    "new_chat": {"ko": "새 대화", "en": "New chat"},
    "conversations": {"ko": "대화 목록", "en": "Conversations"},
    "no_conversations": {"ko": "아직 대화가 없어요.", "en": "No conversations yet."},
    "persona": {"ko": "페르소나", "en": "Persona"},
    "model": {"ko": "모델", "en": "Model"},
    "default_model": {"ko": "기본 모델 ({model})", "en": "Default model ({model})"},
    "language": {"ko": "언어", "en": "Language"},
    "stop": {"ko": "■ 답변 중지", "en": "■ Stop reply"},
    "stopped_now": {"ko": "답변을 멈췄어요.", "en": "The reply was stopped."},
    "nothing_to_stop": {"ko": "진행 중인 답변이 없어요.", "en": "No reply is being written."},
    "placeholder": {"ko": "메시지를 입력하세요", "en": "Type a message"},
    "thinking": {"ko": "생각 중…", "en": "Thinking…"},
    "empty": {"ko": "무엇이든 물어보세요.", "en": "Ask anything."},
    "usage": {
        "ko": "토큰 {prompt:,} + {completion:,} = {total:,} · 비용 {cost}",
        "en": "Tokens {prompt:,} + {completion:,} = {total:,} · cost {cost}",
    },
    "cost_unknown": {"ko": "알 수 없음", "en": "unknown"},
    "status_interrupted": {"ko": "■ 답변이 중간에 멈췄어요.", "en": "■ The reply stopped part way."},
    "status_stopped": {"ko": "■ 중지했어요.", "en": "■ Stopped."},
    "status_blocked": {"ko": "🚫 차단됨", "en": "🚫 Blocked"},
    "status_fallback": {"ko": "모델 대신 보낸 안내 메시지예요.", "en": "A notice sent in place of the model's reply."},
    "dropped": {
        "ko": "서버와의 연결이 끊겼어요. 받은 부분까지는 남겨 두었어요.",
        "en": "The connection to the server was lost. The part that arrived is kept.",
    },
    "retry": {"ko": "다시 시도", "en": "Retry"},
    "unreachable": {
        "ko": "서버({server})에 연결할 수 없어요. 잠시 후 다시 시도해 주세요.",
        "en": "Cannot reach the server ({server}). Please try again in a moment.",
    },
    "model_down": {
        "ko": "모델이 지금 응답하지 않아요. 잠시 후 다시 시도하거나 다른 모델을 골라 주세요.",
        "en": "The model is not answering right now. Try again in a moment or pick another model.",
    },
    "not_found": {"ko": "대화를 찾을 수 없어요.", "en": "The conversation was not found."},
    "auth_failed": {
        "ko": "로그인하지 못했어요. API 키나 사용자 이름과 비밀번호를 확인해 주세요.",
        "en": "Could not log in: check the API key, or the user name and password.",
    },
    "session_ended": {"ko": "로그인이 끝났어요. 다시 로그인해 주세요.", "en": "Your login ended. Please log in again."},
    "unexpected": {
        "ko": "예상하지 못한 문제가 생겼어요. 다시 시도해 주세요. ({detail})",
        "en": "Something unexpected went wrong. Please try again. ({detail})",
    },
    "details": {"ko": "자세히", "en": "Details"},
}


def text(key: str, language: str, **values: object) -> str:
    """The sentence ``key`` in ``language`` (Korean when the language is unknown), with ``values`` filled in."""
    return pick(TEXTS, key, language, **values)
