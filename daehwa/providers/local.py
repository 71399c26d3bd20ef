"""The embedded model: a GGUF file run in-process by llama.cpp through ``xllamacpp``.

xllamacpp runs llama.cpp's own server (continuous batching over ``local_parallel`` slots) inside this process and
hands Chat Completions requests to it as JSON, streaming the reply through a callback on the calling thread. Each
stream therefore runs ``handle_chat_completions`` on a worker thread of the model's engine; the callback forwards
every chunk to the event loop with ``call_soon_threadsafe`` and answers llama.cpp's "stop?" question from a flag
the async side sets when the caller goes away, which cancels the task and frees the slot at the next token.

Engines live in a process-wide cache, keyed by file and slot layout, on purpose: the app, ``daehwa chat`` and the
tests build several providers in one process, and loading a model costs seconds and hundreds of MB. llama.cpp's
backend state is per process anyway. ``unload_all()`` frees them explicitly.

llama.cpp also opens an HTTP listener on a random loopback port; it is locked with a random API key and used only
for ``/tokenize`` (``count_tokens``), which xllamacpp does not expose directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ..context.tokenizers import LocalTokenizer
from ..errors import (
    DaehwaError,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    ProviderError,
    UnsupportedParameter,
)
from ..types import PARAM_NAMES, ProviderEvent, ProviderRequest, StreamEnd, TextDelta, Usage
from .base import ModelInfo, Provider, ProviderConfig, ProviderStatus
from .modelfiles import ModelFiles, ProgressCallback, is_gguf_path

if TYPE_CHECKING:
    import xllamacpp

    from ..config import Settings
    from ..context.tokens import Tokenizer

log = logging.getLogger(__name__)

Chunk = dict[str, Any]


@dataclass(frozen=True, slots=True)
class EngineKey:
    """What makes two loaded models interchangeable."""

    path: str
    parallel: int
    context_size: int  # per slot
    threads: int | None


class LocalEngine:
    """One GGUF model loaded in llama.cpp, with ``parallel`` slots and a worker thread per active stream."""

    def __init__(self, key: EngineKey, *, verbose: bool = False) -> None:
        import xllamacpp  # imported here: loading the 100 MB extension is only worth it when a model runs

        self.key = key
        params = xllamacpp.CommonParams()
        params.model.path = key.path
        params.n_parallel = key.parallel
        params.n_ctx = key.context_size * key.parallel  # split evenly over the slots (kv_unified stays off)
        params.kv_unified = False
        if key.threads is not None:
            params.cpuparams.n_threads = key.threads
            params.cpuparams_batch.n_threads = key.threads
        params.ui = False
        params.verbosity = 1 if verbose else -1
        # The loopback listener llama.cpp opens anyway would otherwise serve anyone on this machine.
        self._api_key = secrets.token_urlsafe(24)
        params.api_keys = [self._api_key]
        try:
            self._server: xllamacpp.Server | None = xllamacpp.Server(params)
        except Exception as exc:
            raise ModelUnavailable(
                f"llama.cpp could not load {key.path} ({exc}): the file may be damaged or not a chat model; "
                f"reinstall it ('daehwa models install NAME') or choose another DAEHWA_LOCAL_MODEL. "
                f"With DAEHWA_LOG_LEVEL=debug llama.cpp logs why."
            ) from None
        # One thread per slot: more would only queue inside llama.cpp, and a request still queued here can be
        # cancelled without ever reaching it.
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=key.parallel, thread_name_prefix=f"daehwa-local-{Path(key.path).stem}"
        )
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()
        self._count_cached = functools.lru_cache(maxsize=4096)(self._count_uncached)

    @property
    def server(self) -> xllamacpp.Server:
        if self._server is None:
            raise ModelUnavailable("The local model was unloaded: restart the service to load it again.")
        return self._server

    def chat(self, body: Mapping[str, Any], on_chunk: Callable[[Chunk], bool]) -> None:
        """Run one streaming Chat Completions request; blocks until done. ``on_chunk`` returns True to stop."""
        self.server.handle_chat_completions(dict(body), on_chunk)

    def _client(self) -> httpx.Client:
        with self._http_lock:
            if self._http is None:
                self._http = httpx.Client(
                    base_url=self.server.listening_address,
                    headers={"Authorization": f"Bearer {self._api_key}"},
                    timeout=30.0,
                    trust_env=False,  # a proxy from the environment must never see loopback traffic
                )
            return self._http

    def tokenize(self, text: str) -> list[int]:
        """The model's token ids for ``text`` (no special tokens added)."""
        response = self._client().post("/tokenize", json={"content": text})
        if response.status_code != 200:
            raise ProviderError(f"llama.cpp could not tokenize ({response.status_code}): {response.text[:200]}")
        tokens = response.json()["tokens"]
        return list(tokens)

    def count_tokens(self, text: str) -> int:
        """Number of tokens in ``text``; cached, as the same messages are counted on every turn."""
        return self._count_cached(text)

    def apply_template(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The prompt text ``messages`` make through the model's chat template."""
        response = self._client().post("/apply-template", json={"messages": [dict(m) for m in messages]})
        if response.status_code != 200:
            raise ProviderError(f"llama.cpp could not apply its chat template ({response.status_code})")
        return str(response.json()["prompt"])

    def count_prompt(self, messages: Sequence[Mapping[str, str]]) -> int:
        """Tokens of the whole prompt ``messages`` make (the ``prompt_tokens`` the model reports for them)."""
        return len(self.tokenize(self.apply_template(messages)))

    def _count_uncached(self, text: str) -> int:
        return len(self.tokenize(text))

    def close(self) -> None:
        """Wait for running streams, then free the model."""
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self._http is not None:
            self._http.close()
        self._server = None  # the C++ destructor stops llama.cpp's loop thread


class _EngineCache:
    """Process-wide engines (see the module docstring for why), each loaded at most once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engines: dict[EngineKey, LocalEngine] = {}
        self._loading: dict[EngineKey, threading.Lock] = {}

    def get(self, key: EngineKey) -> LocalEngine | None:
        return self._engines.get(key)

    def get_or_load(self, key: EngineKey, *, verbose: bool = False) -> LocalEngine:
        """Blocking: the loaded engine for ``key``; concurrent callers wait for one load."""
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                return engine
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            engine = self._engines.get(key)
            if engine is None:
                log.info("loading local model %s (%d slots x %d tokens)", key.path, key.parallel, key.context_size)
                engine = LocalEngine(key, verbose=verbose)
                with self._lock:
                    self._engines[key] = engine
            return engine

    def loaded(self) -> list[EngineKey]:
        return list(self._engines)

    def unload_all(self) -> None:
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in engines:
            engine.close()


_ENGINES = _EngineCache()


def unload_all() -> None:
    """Free every loaded local model of this process (waits for running streams)."""
    _ENGINES.unload_all()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()

_RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})


class LocalProvider(Provider):
    """The embedded model provider: ``local`` (the default model) or ``local/<catalog name>``."""

    # Every first-class Chat Completions parameter; llama.cpp's server understands them all (``n`` only as 1).
    supported_params = frozenset(PARAM_NAMES)

    def __init__(self, config: ProviderConfig, settings: Settings, *, files: ModelFiles | None = None) -> None:
        super().__init__(config, settings)
        self.files = files or ModelFiles.from_settings(settings)
        self._spec = config.default_model or settings.local_model  # catalog name or a .gguf path
        self._errors: dict[str, DaehwaError] = {}  # model -> why it failed to load (cleared by a later success)
        self._engines: dict[str, LocalEngine] = {}  # model id -> its engine, once loaded through this provider
        self._tokenizers: dict[str, LocalTokenizer] = {}
        self._started = False
        # The embedded model shares this machine's CPU: its first token includes processing the whole prompt, which
        # takes seconds on a small machine, and giving up on it only leaves the canned reply.
        self.first_token_timeout = settings.local_first_token_timeout

    # -- naming ------------------------------------------------------------------------------------------------
    @property
    def default_model(self) -> str:
        return self._model_name(self._spec)

    @staticmethod
    def _model_name(spec: str) -> str:
        """The id a model is addressed by: a catalog name, or a .gguf path's file stem."""
        return Path(spec).stem if is_gguf_path(spec) else spec

    def _resolve(self, model: str) -> str:
        """A provider-local model id -> the catalog name or .gguf path to load."""
        if model in self.files.catalog:
            return model
        if is_gguf_path(self._spec) and model in (self._spec, self._model_name(self._spec)):
            return self._spec
        names = ", ".join(f"local/{n}" for n in self.files.catalog)
        raise ModelNotFound(
            f"Unknown local model {model!r}: use 'local' (the default, {self.default_model}) or one of {names}. "
            "Other GGUF files are loaded by setting DAEHWA_LOCAL_MODEL to their path."
        )

    def _key(self, path: Path) -> EngineKey:
        s = self.settings
        return EngineKey(str(path.resolve()), s.local_parallel, s.local_context_size, s.local_threads)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the default model. Missing or damaged files do not raise: ``status()`` then says what to run."""
        if self._started:
            return
        self._started = True
        model = self.primary_model
        try:
            await self._engine(model)
        except DaehwaError as exc:
            log.warning("local model %s is not available: %s", model, exc.message)

    async def warm(self, model: str) -> None:
        """Load ``model`` if it is not loaded yet (joining its file on first use)."""
        await self._engine(model)

    async def aclose(self) -> None:
        """Nothing to free per provider: engines are shared process-wide (``unload_all`` frees them)."""

    async def prepare(self, model: str | None = None, progress: ProgressCallback | None = None) -> Path:
        """Join and verify a model's file ahead of loading (what ``daehwa serve`` shows a progress bar for)."""
        spec = self._resolve(model or self.default_model)
        return await asyncio.to_thread(self.files.ensure, spec, progress)

    def _load(self, name: str) -> LocalEngine:
        """Blocking: join/verify the file of ``name`` if needed, then load it (once per process)."""
        spec = self._resolve(name)
        try:
            path = self.files.ensure(spec)
            engine = _ENGINES.get_or_load(self._key(path), verbose=self.settings.log_level == "debug")
        except DaehwaError as exc:
            self._errors[name] = exc
            raise
        except Exception as exc:  # e.g. a disk error while joining: reported like missing files, never a crash
            log.exception("loading local model %s failed", name)
            error = ModelUnavailable(f"Loading local model {name!r} failed: {exc}")
            self._errors[name] = error
            raise error from exc
        self._errors.pop(name, None)
        return engine

    async def _engine(self, model: str) -> tuple[str, LocalEngine]:
        """The canonical name of ``model`` and its engine, loading it on first use."""
        name = self._model_name(self._resolve(model))
        engine = self._engines.get(name)
        if engine is None:  # first use: file checks and loading block, so they run off the event loop
            engine = await asyncio.to_thread(self._load, name)
            self._engines[name] = engine
        return name, engine

    async def engine(self, model: str | None = None) -> LocalEngine:
        """The loaded engine of ``model`` (default: the default model), loading it on first use."""
        return (await self._engine(model or self.default_model))[1]

    # -- the stream --------------------------------------------------------------------------------------------
    def _body(self, request: ProviderRequest) -> dict[str, Any]:
        """The llama.cpp request for ``request``; invalid or unsupported parameters are rejected here."""
        body: dict[str, Any] = {
            "messages": [m.as_dict() for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for name, value in request.params.set_fields().items():
            if name not in self.supported_params:
                if self.config.unsupported_action == "drop":
                    log.warning("local model: dropping unsupported parameter %r", name)
                    continue
                raise UnsupportedParameter(
                    f"The local model does not support the parameter {name!r}: remove it. Supported: "
                    f"{', '.join(sorted(self.supported_params))}.",
                    param=name,
                )
            if name in self.config.unsupported_params:
                if self.config.unsupported_action == "drop":
                    continue
                raise UnsupportedParameter(f"Provider {self.name!r} is configured to refuse {name!r}.", param=name)
            body.update(_check_param(name, value))
        return body

    def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        return self._stream(request)

    async def _stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        body = self._body(request)
        model, engine = await self._engine(request.model)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def post(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        def on_chunk(chunk: Chunk) -> bool:
            if stop.is_set():
                return True  # tells llama.cpp to cancel the task and free the slot
            post(chunk)
            return False

        def work() -> None:
            try:
                if not stop.is_set():
                    engine.chat(body, on_chunk)
            except BaseException as exc:
                post(_Failed(exc))
            finally:
                post(_DONE)

        future = engine.executor.submit(work)
        usage: Usage | None = None
        finish: dict[int, str] = {}
        finished = False
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, _Failed):
                    raise _translate_exception(item.exc)
                chunk = item
                assert isinstance(chunk, dict)
                if "error" in chunk:
                    raise _translate_error(chunk["error"], self.settings.local_context_size)
                for choice in chunk.get("choices") or ():
                    index = int(choice.get("index", 0))
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield TextDelta(text, index)
                    if choice.get("finish_reason"):
                        finish[index] = str(choice["finish_reason"])
                raw_usage = chunk.get("usage")
                if raw_usage:
                    usage = Usage(int(raw_usage.get("prompt_tokens", 0)), int(raw_usage.get("completion_tokens", 0)))
            if not finish:
                # llama.cpp ends every reply with a finish_reason; a stream without one was cut off inside the engine.
                raise ProviderError(
                    "The local model's stream ended before the reply had a finish_reason: the reply is incomplete. "
                    "Try again; if it keeps happening, run with DAEHWA_LOG_LEVEL=debug and report it.",
                    retryable=True,
                    code="upstream_incomplete",
                )
            finished = True
            yield StreamEnd(usage=usage, finish_reasons=finish, model=model)
        finally:
            if not finished:
                stop.set()
                future.cancel()  # still queued behind busy slots: never starts

    # -- introspection -----------------------------------------------------------------------------------------
    async def list_models(self) -> list[ModelInfo]:
        models = [self.default_model] + [n for n in self.files.catalog if n != self.default_model]
        out = []
        for name in models:
            avail = await asyncio.to_thread(self.files.availability, self._resolve(name))
            reason = avail.reason
            if reason is None and name in self._errors:
                reason = self._errors[name].message
            description = f"{avail.title}: {avail.description}" if avail.description else avail.title
            out.append(
                ModelInfo(
                    id=f"{self.name}/{name}",
                    provider=self.name,
                    available=reason is None and avail.installed,
                    reason=reason,
                    description=description,
                )
            )
        return out

    @property
    def primary_model(self) -> str:
        """The model the app answers with: DAEHWA_DEFAULT_MODEL may name a local model other than 'local'."""
        name, _, model = self.settings.default_model.partition("/")
        return model if name == self.name and model else self.default_model

    def status(self) -> ProviderStatus:
        """Readiness of the primary model (the one ``start`` loads)."""
        model = self.primary_model
        detail: dict[str, Any] = {
            "model": model,
            "parallel": self.settings.local_parallel,
            "context_size": self.settings.local_context_size,
            "loaded_models": sorted(Path(k.path).name for k in _ENGINES.loaded()),
        }
        if model in self._errors:
            return ProviderStatus(available=False, reason=self._errors[model].message, detail=detail)
        engine = self._engines.get(model)
        if engine is not None:
            return ProviderStatus(available=True, loaded=True, detail={**detail, "path": engine.key.path})
        try:
            avail = self.files.availability(self._resolve(model))
        except DaehwaError as exc:
            return ProviderStatus(available=False, reason=exc.message, detail=detail)
        # Not loaded yet: available if its packages are there (the first request joins and loads it).
        return ProviderStatus(available=avail.available, reason=avail.reason, loaded=False, detail=detail)

    def tokenizer(self, model: str) -> Tokenizer | None:
        """The loaded model's own tokenizer (None until the model is loaded: budgets then use the estimate)."""
        name = self._model_name(self._resolve(model)) if model else self.default_model
        engine = self._engines.get(name)
        if engine is None:
            return None
        tokenizer = self._tokenizers.get(name)
        if tokenizer is None:
            tokenizer = self._tokenizers[name] = LocalTokenizer(engine, name=f"local/{name}")
        return tokenizer

    def context_window(self, model: str) -> int | None:
        """Each slot of the embedded model holds DAEHWA_LOCAL_CONTEXT_SIZE tokens, prompt and reply together."""
        return self.config_context_window(model) or self.settings.local_context_size

    def count_tokens(self, text: str, model: str | None = None) -> int:
        """Tokens of ``text`` by the model's own tokenizer. The model must be loaded (``start`` or a first turn)."""
        engine = self._engines.get(model or self.default_model)
        if engine is None:
            raise ModelUnavailable(
                f"Local model {model or self.default_model!r} is not loaded yet: count tokens after start()."
            )
        return engine.count_tokens(text)


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be a number from {low:g} to {high:g}, got {value!r}.", param=name)
    return float(value)


def _check_param(name: str, value: Any) -> dict[str, Any]:
    """One OpenAI parameter, validated, as llama.cpp's request field(s)."""
    if name == "max_tokens":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequest(f"max_tokens must be a positive integer, got {value!r}.", param=name)
        return {"max_tokens": value}
    if name == "temperature":
        return {"temperature": _number(name, value, 0, 2)}
    if name == "top_p":
        return {"top_p": _number(name, value, 0, 1)}
    if name in ("presence_penalty", "frequency_penalty"):
        return {name: _number(name, value, -2, 2)}
    if name == "seed":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"seed must be an integer, got {value!r}.", param=name)
        return {"seed": value & 0xFFFFFFFF}  # llama.cpp seeds are 32-bit
    if name == "stop":
        stops = [value] if isinstance(value, str) else list(value)
        if not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
            raise InvalidRequest("stop must be a string or up to 4 non-empty strings.", param=name)
        return {"stop": stops}
    if name == "n":
        if value != 1:
            raise UnsupportedParameter(
                f"The local model generates one choice per request, so n must be 1 (got {value!r}): "
                "send n separate requests instead.",
                param="n",
            )
        return {}
    if name == "user":
        return {}  # metadata only: accepted, never sent to the model
    if name == "response_format":
        return {"response_format": _check_response_format(value)}
    raise UnsupportedParameter(f"The local model does not support the parameter {name!r}: remove it.", param=name)


def _check_response_format(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping) or value.get("type") not in _RESPONSE_FORMATS:
        raise InvalidRequest(
            "response_format must be {'type': 'text'}, {'type': 'json_object'} or "
            "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}.",
            param="response_format",
        )
    if value["type"] == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
            raise InvalidRequest(
                "response_format json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}.",
                param="response_format",
            )
    return dict(value)


def _translate_error(error: Any, context_size: int) -> DaehwaError:
    """An error object from llama.cpp's server -> the project's error (which names the fix)."""
    if not isinstance(error, Mapping):
        return ProviderError(f"The local model failed: {error!r}")
    message = str(error.get("message", "unknown error"))
    code = int(error.get("code", 500) or 500)
    if error.get("type") == "exceed_context_size_error":
        return InvalidRequest(
            f"The conversation ({error.get('n_prompt_tokens', '?')} tokens) does not fit the local model's context "
            f"of {context_size} tokens per slot: start a new conversation, shorten the message, or raise "
            "DAEHWA_LOCAL_CONTEXT_SIZE.",
            param="messages",
            code="context_length_exceeded",
        )
    if 400 <= code < 500:
        return InvalidRequest(f"The local model refused the request: {message}")
    return ProviderError(f"The local model failed ({code}): {message}", retryable=code == 503)


def _translate_exception(exc: BaseException) -> BaseException:
    if isinstance(exc, DaehwaError):
        return exc
    if isinstance(exc, ValueError):  # xllamacpp raises these for requests llama.cpp rejects up front
        return InvalidRequest(f"The local model refused the request: {exc}")
    if isinstance(exc, Exception):
        return ProviderError(f"The local model failed: {exc}")
    return exc
