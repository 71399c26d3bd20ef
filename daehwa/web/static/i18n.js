// Interface text in Korean and English. The language comes from the user's switch (kept in localStorage), else from
// the browser's languages; Korean is the service's home language.

const STRINGS = {
  ko: {
    app_name: "대화",
    language_name: "한국어",
    language: "언어",
    login_intro: "계속하려면 로그인하세요.",
    login_hint: "처음이라면 daehwa serve가 출력한 로그인 링크를 여세요.",
    username: "사용자 이름",
    password: "비밀번호",
    login: "로그인",
    login_failed: "사용자 이름 또는 비밀번호가 맞지 않아요.",
    login_or: "또는",
    guest_login: "게스트로 시작",
    guest_hint: "계정 없이 대화할 수 있어요. 로그아웃하면 게스트 대화는 다시 열 수 없어요.",
    guest_unavailable: "이 서버에서는 게스트 이용이 꺼져 있어요. 로그인하세요.",
    logout: "로그아웃",
    interests: "내 관심사",
    interests_hint: "대화에서 자주 나온 주제예요. 지우면 다시 배울 때까지 쓰이지 않아요.",
    interests_empty: "아직 기억한 관심사가 없어요.",
    interests_off: "게스트는 관심사를 저장하지 않아요. 로그인하세요.",
    interests_failed: "관심사를 불러오지 못했어요.",
    interests_clear: "모두 지우기",
    interests_remember: "관심사 기억하기",
    interests_paused: "관심사 기억이 꺼져 있어요. 새로 배우지도, 답변에 쓰지도 않아요.",
    settings: "설정",
    account: "계정",
    account_delete: "계정 삭제",
    account_delete_hint: "대화, 관심사, 예약 기록, API 키가 모두 지워지고 되돌릴 수 없어요. 확인하려면 사용자 이름 {name}을(를) 입력하세요.",
    account_delete_name: "사용자 이름",
    account_delete_password: "비밀번호 (설정한 경우)",
    account_delete_confirm: "영구 삭제",
    account_delete_cancel: "취소",
    account_delete_wrong_password: "비밀번호가 맞지 않아요.",
    account_delete_last_admin: "마지막 관리자 계정은 삭제할 수 없어요. 먼저 다른 관리자를 만드세요 (daehwa users create 이름 --admin).",
    account_deleted: "계정을 삭제했어요.",
    interest_delete: "{term} 지우기",
    recommended: "추천 자료",
    close: "닫기",
    not_interested: "관심 없음",
    skip_to_composer: "입력창으로 건너뛰기",
    conversations: "대화 목록",
    new_chat: "새 대화",
    search_label: "대화 검색",
    search_placeholder: "제목으로 검색",
    no_conversations: "아직 대화가 없어요.",
    no_results: "검색 결과가 없어요.",
    load_more: "더 보기",
    loading_older: "이전 메시지를 불러오는 중…",
    rename: "이름 바꾸기",
    rename_label: "새 제목",
    delete: "삭제",
    confirm_delete: "‘{title}’ 대화를 삭제할까요? 되돌릴 수 없어요.",
    untitled: "새 대화",
    theme: "테마",
    theme_auto: "자동",
    theme_light: "밝게",
    theme_dark: "어둡게",
    open_menu: "메뉴 열기",
    close_menu: "메뉴 닫기",
    new_chat_heading: "무엇에 대해 이야기해 볼까요?",
    persona: "페르소나",
    model: "모델",
    model_default: "기본값",
    model_unavailable: "사용 불가",
    start_chat: "대화 시작",
    messages: "메시지",
    composer_label: "메시지",
    composer_placeholder: "메시지를 입력하세요",
    composer_hint: "Enter 보내기 · Shift+Enter 줄바꿈",
    send: "보내기",
    stop: "멈추기",
    you: "나",
    assistant: "대화",
    thinking: "생각 중…",
    generating: "답변을 만드는 중…",
    copy: "복사",
    copied: "복사했어요",
    context: "맥락",
    context_none: "이 답변에는 맥락 기록이 없어요.",
    context_failed: "맥락을 불러오지 못했어요.",
    context_tokens: "토큰 {used} / {budget} ({how}, {tokenizer})",
    context_exact: "정확히 셈",
    context_estimate: "추정치",
    context_recent: "최근 메시지 {count}개 ({tokens} 토큰), 이전 메시지 {dropped}개는 그대로 보내지 않음",
    context_summary: "요약: 처음 메시지 {count}개 ({tokens} 토큰)",
    context_recalled: "다시 불러온 이전 대화 ({score}, {tokens} 토큰): {text}",
    context_note: "참고: {text}",
    copy_code: "코드 복사",
    edit: "수정",
    save_send: "저장하고 보내기",
    cancel: "취소",
    regenerate: "다시 생성",
    retry: "다시 시도",
    dismiss: "닫기",
    status_interrupted: "답변이 중간에 멈췄어요.",
    status_error: "답변을 만들지 못했어요.",
    status_blocked: "부적절한 내용이 있어 차단됐어요.",
    status_fallback: "모델이 응답하지 않아 안내 메시지를 보여 드려요.",
    send_failed: "메시지를 보내지 못했어요: {reason}",
    network_error: "서버에 연결할 수 없어요. 연결을 확인한 뒤 다시 시도하세요.",
    rate_limited: "요청이 너무 많아요. {seconds}초 뒤에 다시 시도하세요.",
    load_failed: "불러오지 못했어요: {reason}",
    session_expired: "로그인이 만료됐어요. 다시 로그인하세요.",
    not_found: "이 대화를 찾을 수 없어요.",
    form_next: "다음",
    form_done: "완료",
    form_confirming: "확인 중",
    form_cancelled: "취소됨",
  },
  en: {
    app_name: "Daehwa",
    language_name: "English",
    language: "Language",
    login_intro: "Sign in to continue.",
    login_hint: "First start? Open the login link that daehwa serve printed.",
    username: "Username",
    password: "Password",
    login: "Sign in",
    login_failed: "That username and password do not match.",
    login_or: "or",
    guest_login: "Continue as guest",
    guest_hint: "No account needed. After signing out, a guest cannot open their conversations again.",
    guest_unavailable: "Guest use is turned off on this server. Please sign in.",
    logout: "Sign out",
    interests: "My interests",
    interests_hint: "Topics you often talk about. Deleted ones are not used until they are learned again.",
    interests_empty: "No interests remembered yet.",
    interests_off: "Guests have no saved interests. Sign in.",
    interests_failed: "Could not load your interests.",
    interests_clear: "Delete all",
    interests_remember: "Remember my interests",
    interests_paused: "Remembering is off: nothing new is learned and nothing remembered is used.",
    settings: "Settings",
    account: "Account",
    account_delete: "Delete account",
    account_delete_hint: "Your conversations, interests, form records and API keys are deleted for good. Type your user name {name} to confirm.",
    account_delete_name: "User name",
    account_delete_password: "Password (if you set one)",
    account_delete_confirm: "Delete permanently",
    account_delete_cancel: "Cancel",
    account_delete_wrong_password: "The password is wrong.",
    account_delete_last_admin: "The last admin cannot be deleted: create another admin first (daehwa users create NAME --admin).",
    account_deleted: "Your account was deleted.",
    interest_delete: "Delete {term}",
    recommended: "Recommended",
    close: "Close",
    not_interested: "Not interested",
    skip_to_composer: "Skip to the message box",
    conversations: "Conversations",
    new_chat: "New chat",
    search_label: "Search conversations",
    search_placeholder: "Search by title",
    no_conversations: "No conversations yet.",
    no_results: "No matching conversations.",
    load_more: "More",
    loading_older: "Loading older messages…",
    rename: "Rename",
    rename_label: "New title",
    delete: "Delete",
    confirm_delete: "Delete “{title}”? This cannot be undone.",
    untitled: "New chat",
    theme: "Theme",
    theme_auto: "Auto",
    theme_light: "Light",
    theme_dark: "Dark",
    open_menu: "Open menu",
    close_menu: "Close menu",
    new_chat_heading: "What shall we talk about?",
    persona: "Persona",
    model: "Model",
    model_default: "default",
    model_unavailable: "unavailable",
    start_chat: "Start",
    messages: "Messages",
    composer_label: "Message",
    composer_placeholder: "Write a message",
    composer_hint: "Enter to send · Shift+Enter for a new line",
    send: "Send",
    stop: "Stop",
    you: "You",
    assistant: "Daehwa",
    thinking: "Thinking…",
    generating: "Writing the reply…",
    copy: "Copy",
    copied: "Copied",
    context: "context",
    context_none: "No context was recorded for this reply.",
    context_failed: "Could not load the context.",
    context_tokens: "{used} of {budget} tokens ({how}, {tokenizer})",
    context_exact: "exact",
    context_estimate: "estimated",
    context_recent: "{count} recent messages ({tokens} tokens); {dropped} older ones not sent word for word",
    context_summary: "summary: the first {count} messages ({tokens} tokens)",
    context_recalled: "recalled earlier turn ({score}, {tokens} tokens): {text}",
    context_note: "note: {text}",
    copy_code: "Copy code",
    edit: "Edit",
    save_send: "Save and send",
    cancel: "Cancel",
    regenerate: "Regenerate",
    retry: "Retry",
    dismiss: "Dismiss",
    status_interrupted: "The reply was interrupted.",
    status_error: "The reply could not be written.",
    status_blocked: "Blocked for inappropriate content.",
    status_fallback: "The model did not answer; this is a standby message.",
    send_failed: "Your message was not sent: {reason}",
    network_error: "Cannot reach the server. Check the connection and retry.",
    rate_limited: "Too many requests. Retry in {seconds} s.",
    load_failed: "Could not load: {reason}",
    session_expired: "Your session ended. Please sign in again.",
    not_found: "This conversation was not found.",
    form_next: "next",
    form_done: "done",
    form_confirming: "confirming",
    form_cancelled: "cancelled",
  },
};

export const LOCALES = Object.keys(STRINGS);
const KEY = "daehwa.lang";

function fromBrowser() {
  for (const tag of navigator.languages || [navigator.language || ""]) {
    const lang = String(tag).slice(0, 2).toLowerCase();
    if (lang in STRINGS) return lang;
  }
  return "ko";
}

function stored() {
  try {
    const value = localStorage.getItem(KEY);
    return value in STRINGS ? value : null;
  } catch {
    return null;
  }
}

let current = stored() || fromBrowser();

export function locale() {
  return current;
}

export function setLocale(lang) {
  if (!(lang in STRINGS)) return;
  current = lang;
  try {
    localStorage.setItem(KEY, lang);
  } catch {
    // Private mode: the choice lasts for this page only.
  }
  applyI18n(document);
}

/** The text for `key`, with `{name}` placeholders filled from `vars`. */
export function t(key, vars) {
  let text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  if (vars) text = text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  return text;
}

/** Fill every element marked with data-i18n (text), -placeholder, -label (aria-label + title) under `root`. */
export function applyI18n(root) {
  document.documentElement.lang = current;
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
    el.title = t(el.dataset.i18nLabel);
  }
}

/** Fill a <select> with the languages, each named in itself. */
export function fillLanguageSelect(select) {
  select.replaceChildren(
    ...LOCALES.map((lang) => {
      const option = new Option(STRINGS[lang].language_name, lang);
      option.lang = lang;
      return option;
    }),
  );
  select.value = current;
}
