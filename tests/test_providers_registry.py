"""The providers file and model-name resolution (daehwa/providers/registry.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daehwa.config import Settings
from daehwa.errors import ConfigError, ModelNotFound
from daehwa.providers.base import ModelInfo, Provider, ProviderStatus
from daehwa.providers.openai import OpenAIProvider
from daehwa.providers.registry import ProviderRegistry, _load_provider_type, load_provider_file
from daehwa.types import ProviderEvent, ProviderRequest

GOOD = """
[providers.zhipu]
base_url = "https://open.bigmodel.cn/api/paas/v4"
api_key_env = "ZHIPU_API_KEY"
models = ["glm-4-flash", "glm-4-plus"]
unsupported_params = ["seed", "logit_bias"]
unsupported_action = "drop"

[providers.ollama]
base_url = "http://127.0.0.1:11434/v1"
default_model = "qwen2.5:1.5b"
options = { timeout = 300 }

[providers.openrouter]
base_url = "https://openrouter.ai/api/v1"
api_key_env = "OPENROUTER_API_KEY"
models = ["meta-llama/llama-3.1-8b-instruct"]

[providers.bare]
base_url = "http://127.0.0.1:8080/v1"
"""


class LocalStandIn(Provider):
    """Stands in for the embedded model: resolution needs only its name and default model."""

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:  # pragma: no cover
        raise NotImplementedError
        yield

    async def list_models(self) -> list[ModelInfo]:  # pragma: no cover
        return []

    def status(self) -> ProviderStatus:  # pragma: no cover
        return ProviderStatus(available=True)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file_loads_every_field(tmp_path: Path) -> None:
    configs = {c.name: c for c in load_provider_file(write(tmp_path, GOOD))}
    assert list(configs) == ["zhipu", "ollama", "openrouter", "bare"]
    zhipu = configs["zhipu"]
    assert zhipu.type == "openai"  # the default type
    assert zhipu.base_url == "https://open.bigmodel.cn/api/paas/v4"
    assert zhipu.api_key_env == "ZHIPU_API_KEY"
    assert zhipu.models == ("glm-4-flash", "glm-4-plus")
    assert zhipu.unsupported_params == ("seed", "logit_bias") and zhipu.unsupported_action == "drop"
    ollama = configs["ollama"]
    assert ollama.api_key_env is None and ollama.default_model == "qwen2.5:1.5b"
    assert ollama.options == {"timeout": 300} and ollama.unsupported_action == "reject"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[providers.x]\nbase_url = "http://h/v1"\napi_kye_env = "K"\n', "unknown keys ['api_kye_env']"),
        ('[providers.x]\nbase_url = "http://h/v1"\napi_key = "sk-abc"\n', "unknown keys ['api_key']"),
        ('[providers.x\nbase_url = "http://h/v1"\n', "not valid TOML"),
        ('[models.x]\nbase_url = "http://h/v1"\n', "[providers.NAME]"),
        ("[providers]\nx = 3\n", "providers.x must be a table"),
        ('[providers."a/b"]\nbase_url = "http://h/v1"\n', "may not contain '/'"),
        ('[providers.x]\nunsupported_action = "ignore"\n', "'reject' or 'drop'"),
        ('[providers.x]\nmodels = "glm-4-flash"\n', "models must be a list of strings"),
        ('[providers.x]\nbase_url = "127.0.0.1:11434/v1"\n', "must start with http:// or https://"),
        ("[providers.x]\nbase_url = 11434\n", "base_url must be a string"),
        ('[providers.x]\noptions = "fast"\n', "options must be a table"),
    ],
)
def test_bad_files_fail_naming_the_problem(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_provider_file(path)
    assert words in info.value.message and str(path) in info.value.message


def test_a_key_pasted_into_api_key_env_is_refused_without_echoing_it(tmp_path: Path) -> None:
    secret = "sk-pasted-SECRET-abc123.def"
    with pytest.raises(ConfigError) as info:
        load_provider_file(write(tmp_path, f'[providers.x]\napi_key_env = "{secret}"\n'))
    assert "name* of the environment variable" in info.value.message
    assert secret not in info.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_provider_file(tmp_path / "nope.toml")


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProviderRegistry:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, providers_file=write(tmp_path, GOOD), local_model="qwen2.5-0.5b"
    )
    return ProviderRegistry.from_settings(settings, types={"local": LocalStandIn, "openai": OpenAIProvider})


@pytest.mark.parametrize(
    ("name", "provider", "model"),
    [
        ("local", "local", "qwen2.5-0.5b"),
        ("local/smollm2-135m", "local", "smollm2-135m"),
        ("openai", "openai", "gpt-4o-mini"),
        ("openai/gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("openai/ft:gpt-4o-mini:acme::abc", "openai", "ft:gpt-4o-mini:acme::abc"),  # any name is passed on
        ("zhipu/glm-4-flash", "zhipu", "glm-4-flash"),
        ("zhipu", "zhipu", "glm-4-flash"),
        ("ollama", "ollama", "qwen2.5:1.5b"),
        ("openrouter/meta-llama/llama-3.1-8b-instruct", "openrouter", "meta-llama/llama-3.1-8b-instruct"),
        ("  zhipu/glm-4-flash ", "zhipu", "glm-4-flash"),
    ],
)
def test_resolve(registry: ProviderRegistry, name: str, provider: str, model: str) -> None:
    found, model_id = registry.resolve(name)
    assert (found.name, model_id) == (provider, model)
    assert registry.full_name(found, model_id) == f"{provider}/{model}"


def test_provider_types_come_from_the_file(registry: ProviderRegistry) -> None:
    zhipu = registry.get("zhipu")
    assert isinstance(zhipu, OpenAIProvider) and zhipu.base_url == "https://open.bigmodel.cn/api/paas/v4"
    ollama = registry.get("ollama")
    assert isinstance(ollama, OpenAIProvider) and ollama.timeout == 300


def test_unknown_provider_lists_the_known_ones(registry: ProviderRegistry) -> None:
    with pytest.raises(ModelNotFound) as info:
        registry.resolve("mistral/mistral-small")
    err = info.value
    assert err.status == 404 and err.param == "model"
    assert "local, ollama, openai, openrouter, zhipu" in err.message and "daehwa models" in err.message


def test_bare_model_name_suggests_its_provider(registry: ProviderRegistry) -> None:
    with pytest.raises(ModelNotFound, match="Did you mean 'zhipu/glm-4-flash'"):
        registry.resolve("glm-4-flash")


@pytest.mark.parametrize("name", ["openai/", "zhipu/", ""])
def test_empty_model_or_provider_is_not_found(registry: ProviderRegistry, name: str) -> None:
    with pytest.raises(ModelNotFound):
        registry.resolve(name)


def test_provider_without_models_needs_one_named(registry: ProviderRegistry) -> None:
    with pytest.raises(ModelNotFound, match="bare/<model>"):
        registry.resolve("bare")
    assert registry.resolve("bare/llama-3")[1] == "llama-3"


def test_file_entry_overrides_the_builtin_openai(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = '[providers.openai]\nbase_url = "http://127.0.0.1:4000/v1"\napi_key_env = "PROXY_KEY"\nmodels = ["m"]\n'
    settings = Settings(_env_file=None, data_dir=tmp_path, providers_file=write(tmp_path, text))  # type: ignore[call-arg]
    registry = ProviderRegistry.from_settings(settings, types={"local": LocalStandIn, "openai": OpenAIProvider})
    provider, model = registry.resolve("openai")
    assert model == "m" and isinstance(provider, OpenAIProvider) and provider.base_url == "http://127.0.0.1:4000/v1"


def test_unknown_type_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = '[providers.x]\ntype = "anthropic"\nbase_url = "http://h/v1"\n'
    settings = Settings(_env_file=None, data_dir=tmp_path, providers_file=write(tmp_path, text))  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="type 'anthropic', which is not installed"):
        ProviderRegistry.from_settings(settings, types={"local": LocalStandIn, "openai": OpenAIProvider})
    with pytest.raises(ConfigError, match=r"type 'anthropic', which is not installed.*'openai'"):
        ProviderRegistry.from_settings(settings)  # the real entry points


def test_openai_type_is_registered_as_an_entry_point() -> None:
    assert _load_provider_type("openai") is OpenAIProvider
    assert _load_provider_type("no-such-type") is None
