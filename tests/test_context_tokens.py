"""Token counting: exact for the embedded models (checked against the model's own prompt_tokens) and OpenAI's BPE,
an estimate marked as such for the rest; context windows and budgets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from daehwa.config import Settings
from daehwa.context.limits import DEFAULT_WINDOW, context_budget, known_window
from daehwa.context.tokenizers import OpenAITokenizer, openai_encoding_name, openai_tokenizer
from daehwa.context.tokens import EstimateTokenizer, count_message_tokens
from daehwa.errors import ConfigError
from daehwa.providers.registry import ProviderRegistry, load_provider_file
from daehwa.types import ChatMessage, GenerationParams, ProviderRequest, StreamEnd

from .conftest import require
from .test_providers_local import QWEN_SMALL, SMOL, make_provider, model_cache, require_model  # noqa: F401

CONVERSATIONS = [
    [ChatMessage("user", "Hello! What is the capital of France?")],
    [
        ChatMessage("system", "You are a friendly assistant. Answer briefly."),
        ChatMessage("user", "서울 날씨 알려줘"),
        ChatMessage("assistant", "오늘 서울은 맑고 낮 기온은 15도입니다."),
        ChatMessage("user", "아까 말한 도시 말고 부산은? 🙂"),
    ],
    [
        ChatMessage("system", "당신은 한국어 선생님입니다."),
        ChatMessage("user", "  spaces, tabs\tand\nnew lines  "),  # never stripped here: counted as is
        ChatMessage("assistant", "```python\nprint('hi')\n```"),
        ChatMessage("user", "고마워요!"),
    ],
]


@pytest.mark.local_model
@pytest.mark.parametrize("model", [SMOL, QWEN_SMALL])
async def test_local_counts_equal_the_prompt_tokens_the_model_reports(tmp_path: Path, model_cache: Path, model: str):  # noqa: F811
    require_model(model, model_cache)
    provider = make_provider(tmp_path, model_cache, model=model, parallel=1)
    await provider.start()
    tokenizer = provider.tokenizer(model)
    assert tokenizer is not None and tokenizer.exact and tokenizer.name == f"local/{model}"
    for messages in CONVERSATIONS:
        request = ProviderRequest(model=model, messages=tuple(messages), params=GenerationParams(max_tokens=1))
        end = [e async for e in provider.stream(request) if isinstance(e, StreamEnd)][0]  # noqa: RUF015
        assert end.usage is not None
        assert count_message_tokens(messages, tokenizer) == end.usage.prompt_tokens, messages
    assert tokenizer.count("hello world") == provider.count_tokens("hello world", model)


def test_a_local_model_not_loaded_has_no_tokenizer_yet(tmp_path: Path):
    provider = make_provider(tmp_path, tmp_path / "models")
    assert provider.tokenizer(SMOL) is None
    assert provider.context_window(SMOL) == 1024  # DAEHWA_LOCAL_CONTEXT_SIZE of make_provider


@pytest.fixture
def bpe() -> None:
    require(
        importlib.util.find_spec("bpe_openai") is not None, "bpe-openai is not installed: pip install -e '.[tokens]'"
    )


def test_openai_models_count_with_their_bpe(bpe: None):
    assert openai_encoding_name("gpt-4o-mini") == "o200k_base"
    assert openai_encoding_name("openai/gpt-4.1-mini") == "o200k_base"
    assert openai_encoding_name("gpt-4-turbo") == "cl100k_base"
    assert openai_encoding_name("o3-mini") == "o200k_base"
    assert openai_encoding_name("glm-4-flash") is None
    assert openai_encoding_name("qwen2.5:1.5b") is None
    o200k = openai_tokenizer("gpt-4o-mini")
    assert isinstance(o200k, OpenAITokenizer) and o200k.exact
    # Reference ids from OpenAI's tokenizer: "hello world" is [24912, 2375] in o200k_base, [15339, 1917] in cl100k.
    assert o200k.count("hello world") == 2
    cl100k = openai_tokenizer("gpt-4")
    assert cl100k is not None and cl100k.count("hello world") == 2
    # A special token's text in a message is ordinary text, never an error.
    assert o200k.count("<|endoftext|>") > 1
    # OpenAI's recipe: 3 per message + 3 to prime the reply.
    assert count_message_tokens([ChatMessage("user", "hello world")], o200k) == 2 + 3 + 3
    assert openai_tokenizer("glm-4") is None


def test_the_openai_provider_offers_the_bpe_only_for_openai_models(bpe: None, tmp_path: Path):
    registry = ProviderRegistry.from_settings(Settings(data_dir=tmp_path))
    openai = registry.get("openai")
    assert openai is not None
    tokenizer = openai.tokenizer("gpt-4o-mini")
    assert tokenizer is not None and tokenizer.name == "o200k_base"
    assert openai.tokenizer("Qwen/Qwen2.5-1.5B-Instruct") is None


def test_unknown_models_fall_back_to_the_estimate_marked_as_such():
    estimate = EstimateTokenizer()
    assert not estimate.exact and estimate.name == "estimate"
    assert estimate.count("안녕하세요") == 5


def test_known_windows_and_budgets():
    assert known_window("gpt-4o-mini") == 128_000
    assert known_window("openai/gpt-4") == 8_192
    assert known_window("gpt-4-turbo-2024-04-09") == 128_000
    assert known_window("glm-4-flash") == 128_000
    assert known_window("qwen2.5:1.5b") == 32_768
    assert known_window("my-own-model") is None
    budget = context_budget(4096, max_tokens=None, cap=8192)
    assert (budget.tokens, budget.reply_tokens) == (3072, 1024)
    assert context_budget(4096, max_tokens=500, cap=None).tokens == 3596
    assert context_budget(128_000, max_tokens=None, cap=8192).tokens == 8192
    assert context_budget(DEFAULT_WINDOW, max_tokens=None, cap=None).tokens == DEFAULT_WINDOW - 1024


def test_windows_are_overridable_per_provider_and_model_in_the_providers_file(tmp_path: Path):
    path = tmp_path / "providers.toml"
    path.write_text(
        '[providers.zhipu]\nbase_url = "https://open.bigmodel.cn/api/paas/v4"\nmodels = ["glm-4-flash"]\n'
        'context_window = 32768\ncontext_windows = { "glm-4-plus" = 65536 }\n',
        encoding="utf-8",
    )
    registry = ProviderRegistry.from_settings(Settings(data_dir=tmp_path, providers_file=path))
    zhipu = registry.get("zhipu")
    assert zhipu is not None
    assert zhipu.context_window("glm-4-plus") == 65536
    assert zhipu.context_window("glm-4-flash") == 32768  # the provider's value beats the table's 128k
    openai = registry.get("openai")
    assert openai is not None and openai.context_window("gpt-4o") == 128_000


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("context_window = 12", "context_window must be a whole number"),
        ('context_windows = { "m" = "big" }', "context_windows must map"),
    ],
)
def test_bad_windows_in_the_providers_file_name_the_key(tmp_path: Path, line: str, message: str):
    path = tmp_path / "providers.toml"
    path.write_text(f'[providers.x]\nbase_url = "http://127.0.0.1:1/v1"\n{line}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_provider_file(path)
