"""Which providers exist, and how a model name maps onto one.

Implementations register as entry points in the ``daehwa.providers`` group (name -> ``Provider`` subclass), the
built-in ones exactly as a third-party plugin would, so the list of backends is data, not ``if`` chains.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import read_toml_file
from ..errors import ConfigError, ModelNotFound
from .base import ModelInfo, Provider, ProviderConfig

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "daehwa.providers"
ProviderFactory = Callable[[ProviderConfig, "Settings"], Provider]


def provider_types() -> dict[str, ProviderFactory]:
    """Every installed provider implementation, by type name."""
    found: dict[str, ProviderFactory] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.load()
    return found


def builtin_provider_configs(settings: Settings) -> list[ProviderConfig]:
    """The providers every install has: the embedded model and OpenAI (available once a key is set)."""
    return [
        ProviderConfig(name="local", type="local", default_model=settings.local_model),
        ProviderConfig(
            name="openai",
            type="openai",
            base_url=settings.openai_base_url,
            api_key_env="OPENAI_API_KEY",
            models=("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1"),
        ),
    ]


_CONFIG_KEYS = {
    "type",
    "base_url",
    "api_key_env",
    "models",
    "default_model",
    "unsupported_params",
    "unsupported_action",
    "options",
    "context_window",
    "context_windows",
}


def load_provider_file(path: Path) -> list[ProviderConfig]:
    """Read named providers from a TOML file: one ``[providers.NAME]`` table each."""
    data = read_toml_file(path, what="Providers file", setting="DAEHWA_PROVIDERS_FILE")
    tables = data.get("providers")
    if not isinstance(tables, dict):
        raise ConfigError(f"Providers file {path} needs [providers.NAME] tables, e.g. [providers.ollama].")
    configs = []
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: providers.{name} must be a table.")
        unknown = set(table) - _CONFIG_KEYS
        if unknown:
            raise ConfigError(
                f"{path}: providers.{name} has unknown keys {sorted(unknown)}; known: {sorted(_CONFIG_KEYS)}"
            )
        if "/" in name:
            raise ConfigError(f"{path}: provider name {name!r} may not contain '/'.")
        action = table.get("unsupported_action", "reject")
        if action not in ("reject", "drop"):
            raise ConfigError(f"{path}: providers.{name}.unsupported_action must be 'reject' or 'drop'.")
        _check_table_values(path, name, table)
        configs.append(
            ProviderConfig(
                name=name,
                type=str(table.get("type", "openai")),
                base_url=table.get("base_url"),
                api_key_env=table.get("api_key_env"),
                models=tuple(table.get("models", ())),
                default_model=table.get("default_model"),
                unsupported_params=tuple(table.get("unsupported_params", ())),
                unsupported_action=action,
                options=dict(table.get("options", {})),
                context_window=table.get("context_window"),
                context_windows=dict(table.get("context_windows", {})),
            )
        )
    return configs


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_table_values(path: Path, name: str, table: dict[str, object]) -> None:
    """Type-check one ``[providers.NAME]`` table, so a typo fails at start-up with the key named, not mid-request."""
    where = f"{path}: providers.{name}"
    for key in ("type", "base_url", "api_key_env", "default_model"):
        if key in table and not isinstance(table[key], str):
            raise ConfigError(f"{where}.{key} must be a string.")
    for key in ("models", "unsupported_params"):
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f'{where}.{key} must be a list of strings, e.g. {key} = ["a", "b"].')
    window = table.get("context_window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 256):
        raise ConfigError(f"{where}.context_window must be a whole number of tokens (at least 256), e.g. 32768.")
    windows = table.get("context_windows", {})
    if not isinstance(windows, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 256 for v in windows.values()
    ):
        raise ConfigError(
            f"{where}.context_windows must map model ids to token counts (at least 256), "
            'e.g. { "glm-4-flash" = 128000 }.'
        )
    if not isinstance(table.get("options", {}), dict):
        raise ConfigError(f"{where}.options must be a table.")
    base_url = table.get("base_url")
    if isinstance(base_url, str) and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.base_url must start with http:// or https://, e.g. http://127.0.0.1:11434/v1.")
    env = table.get("api_key_env")
    if isinstance(env, str) and not _ENV_NAME.match(env):
        # Most likely the key itself was pasted here: say so without repeating the value.
        raise ConfigError(
            f"{where}.api_key_env must be the *name* of the environment variable holding the key (e.g. "
            f"ZHIPU_API_KEY), not the key itself; put the key in that variable or the .env file."
        )


def _load_provider_type(type_name: str) -> ProviderFactory | None:
    """The implementation registered as ``type_name``; only the types in use are imported."""
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=type_name):
        try:
            return ep.load()
        except Exception as exc:
            raise ConfigError(f"Provider type {type_name!r} ({ep.value}) failed to load: {exc}") from exc
    return None


class ProviderRegistry:
    """The configured providers of one app, by name."""

    def __init__(self, providers: Iterable[Provider]) -> None:
        self._providers: dict[str, Provider] = {}
        for p in providers:
            self._providers[p.name] = p

    @classmethod
    def from_settings(cls, settings: Settings, types: dict[str, ProviderFactory] | None = None) -> ProviderRegistry:
        configs = {c.name: c for c in builtin_provider_configs(settings)}
        if settings.providers_file:
            for c in load_provider_file(Path(settings.providers_file)):
                configs[c.name] = c  # a file entry may override a built-in one
        providers = []
        for config in configs.values():
            # Entry points are loaded one by one, so a broken plugin that is not used cannot break start-up.
            factory = _load_provider_type(config.type) if types is None else types.get(config.type)
            if factory is None:
                installed = (
                    sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)) if types is None else sorted(types)
                )
                raise ConfigError(
                    f"Provider {config.name!r} has type {config.type!r}, which is not installed; "
                    f"installed types: {installed}."
                )
            providers.append(factory(config, settings))
        return cls(providers)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._providers.values())

    def get(self, name: str) -> Provider | None:
        return self._providers.get(name)

    def resolve(self, model: str) -> tuple[Provider, str]:
        """``"openai/gpt-4o-mini"`` -> (the openai provider, ``"gpt-4o-mini"``); ``"local"`` -> its default."""
        model = model.strip()
        provider_name, sep, model_id = model.partition("/")
        provider = self._providers.get(provider_name)
        if provider is None:
            names = ", ".join(sorted(self._providers))
            hint = "".join(
                f" Did you mean '{p.name}/{model}'?" for p in self._providers.values() if model in p.config.models
            )
            raise ModelNotFound(
                f"Unknown model {model!r}: models are named <provider>/<model> (providers: {names}), "
                f"e.g. 'local' or 'openai/gpt-4o-mini'. Run 'daehwa models' to list them.{hint}"
            )
        if not sep:
            try:
                return provider, provider.default_model
            except NotImplementedError as exc:  # the provider has no models configured
                raise ModelNotFound(str(exc)) from None
        if not model_id:
            raise ModelNotFound(f"Model name {model!r} names no model after '/'.")
        return provider, model_id

    def full_name(self, provider: Provider, model_id: str) -> str:
        return f"{provider.name}/{model_id}"

    async def list_models(self) -> list[ModelInfo]:
        out: list[ModelInfo] = []
        for p in self._providers.values():
            try:
                out.extend(await p.list_models())
            except Exception as exc:  # a broken provider must not hide the others
                log.warning("listing models of provider %s failed: %s", p.name, exc)
                out.append(ModelInfo(id=f"{p.name}/*", provider=p.name, available=False, reason=str(exc)))
        return out

    async def start(self, names: Iterable[str] | None = None) -> None:
        """Start the named providers (all by default); the others start lazily on first use."""
        wanted = None if names is None else set(names)
        for p in self._providers.values():
            if wanted is None or p.name in wanted:
                await p.start()

    async def aclose(self) -> None:
        for p in self._providers.values():
            await p.aclose()
