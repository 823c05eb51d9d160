"""The Llama decoder through our generation interface: batching, chunking, cache accounting."""

from __future__ import annotations

import pytest
import torch

from handlers.generation.decoder import LlamaDecoder
from handlers.generation.interface import (
    ContextOverflow,
    GenerationError,
    GenerationModel,
    UnknownSequence,
)
from handlers.generation.llama import AttentionMode, Llama, LlamaConfig

CONFIG = LlamaConfig(
    vocab_size=300,
    dim=64,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    ffn_dim=128,
    max_context=96,
    rope_theta=500.0,
    tie_embeddings=False,
)
PROMPTS = {"short": [5], "mid": list(range(10, 27)), "long": list(range(40, 110, 2))}


def random_model(attention: AttentionMode = "loop", config: LlamaConfig = CONFIG) -> Llama:
    model = Llama(config, attention=attention)
    model.init_weights(torch.Generator().manual_seed(7), std=0.2)
    return model.eval()


@pytest.fixture(params=["loop", "padded"])
def decoder(request: pytest.FixtureRequest) -> LlamaDecoder:
    return LlamaDecoder(random_model(request.param), block_tokens=8)


def test_the_decoder_is_a_generation_model(decoder: LlamaDecoder) -> None:
    assert isinstance(decoder, GenerationModel)
    assert decoder.kv_bytes_per_token == 2 * 2 * 2 * 16 * 4  # layers, k+v, kv heads, dim, fp32
    assert decoder.max_context == 96


def test_prefill_matches_the_cache_free_forward(decoder: LlamaDecoder) -> None:
    tokens = PROMPTS["long"]
    with torch.inference_mode():
        reference = decoder.model(torch.tensor([tokens]))[0]
    first = decoder.prefill("a", tokens[:1])
    rest = decoder.prefill("a", tokens[1:])
    torch.testing.assert_close(first, reference[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rest, reference[-1], atol=1e-5, rtol=1e-5)


def test_chunked_prefill_equals_one_shot(decoder: LlamaDecoder) -> None:
    tokens = PROMPTS["long"]
    whole = decoder.prefill("whole", tokens)
    for start, end in [(0, 3), (3, 4), (4, 20), (20, len(tokens))]:
        chunked = decoder.prefill("chunked", tokens[start:end])
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    assert decoder.sequence_length("chunked") == decoder.sequence_length("whole") == len(tokens)
    # and the caches left behind decode the same next token
    both = decoder.decode(["whole", "chunked"], [3, 3])
    torch.testing.assert_close(both[0], both[1], atol=1e-5, rtol=1e-5)


def test_batched_decode_of_ragged_sequences_equals_decoding_each_alone(
    decoder: LlamaDecoder,
) -> None:
    steps = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]
    for seq_id, prompt in PROMPTS.items():
        decoder.prefill(seq_id, prompt)
    batched = [decoder.decode(list(PROMPTS), step) for step in steps]

    alone = LlamaDecoder(decoder.model, block_tokens=8)
    for row, (seq_id, prompt) in enumerate(PROMPTS.items()):
        alone.prefill(seq_id, prompt)
        for step_index, step in enumerate(steps):
            logits = alone.decode([seq_id], [step[row]])
            torch.testing.assert_close(logits[0], batched[step_index][row], atol=1e-5, rtol=1e-5)
        alone.release(seq_id)


def test_sequences_join_and_leave_between_steps(decoder: LlamaDecoder) -> None:
    decoder.prefill("a", PROMPTS["mid"])
    decoder.decode(["a"], [1])
    decoder.prefill("b", PROMPTS["short"])  # joins while "a" is mid-generation
    mixed = decoder.decode(["b", "a"], [2, 2])
    decoder.release("a")
    only_b = decoder.decode(["b"], [3])

    alone = LlamaDecoder(decoder.model)
    alone.prefill("b", PROMPTS["short"])
    torch.testing.assert_close(alone.decode(["b"], [2])[0], mixed[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone.decode(["b"], [3])[0], only_b[0], atol=1e-5, rtol=1e-5)


def test_one_mixed_step_equals_separate_decode_and_prefills(decoder: LlamaDecoder) -> None:
    """A decode and prompt chunks in one pass: a new sequence, a long prompt's second chunk."""
    separate = LlamaDecoder(decoder.model, block_tokens=8)
    for model in (decoder, separate):
        model.prefill("a", PROMPTS["mid"])
        model.prefill("long", PROMPTS["long"][:10])
    decoded, prefilled = decoder.step(
        ["a"], [4], [("new", PROMPTS["short"]), ("long", PROMPTS["long"][10:])]
    )
    torch.testing.assert_close(decoded[0], separate.decode(["a"], [4])[0], atol=1e-5, rtol=1e-5)
    for row, (seq_id, chunk) in enumerate([("new", PROMPTS["short"]),
                                          ("long", PROMPTS["long"][10:])]):  # fmt: skip
        expected = separate.prefill(seq_id, chunk)
        torch.testing.assert_close(prefilled[row], expected, atol=1e-5, rtol=1e-5)
    assert decoder.sequence_length("long") == len(PROMPTS["long"])
    assert decoder.kv_bytes_in_use() == separate.kv_bytes_in_use()


def test_a_mixed_step_that_overflows_creates_and_extends_nothing(decoder: LlamaDecoder) -> None:
    decoder.prefill("a", PROMPTS["long"])
    with pytest.raises(ContextOverflow):
        decoder.step(["a"], [1], [("new", [1, 2]), ("big", list(range(97)))])
    assert decoder.sequence_length("a") == len(PROMPTS["long"])
    assert decoder.sequence_length("new") == decoder.sequence_length("big") == 0
    with pytest.raises(GenerationError, match="twice"):
        decoder.step(["a"], [1], [("a", [2])])


def test_release_frees_the_cache(decoder: LlamaDecoder) -> None:
    assert decoder.kv_bytes_in_use() == 0
    decoder.prefill("a", PROMPTS["long"])  # 35 tokens: 5 blocks of 8
    decoder.prefill("b", PROMPTS["short"])
    per_token = decoder.kv_bytes_per_token
    assert decoder.kv_bytes_in_use() == (40 + 8) * per_token
    decoder.release("a")
    assert decoder.kv_bytes_in_use() == 8 * per_token
    decoder.release("b")
    assert decoder.kv_bytes_in_use() == 0
    assert decoder.sequence_length("a") == 0
    with pytest.raises(UnknownSequence):
        decoder.decode(["a"], [1])
    with pytest.raises(UnknownSequence):
        decoder.release("a")


def test_a_sequence_cannot_outgrow_the_context(decoder: LlamaDecoder) -> None:
    with pytest.raises(ContextOverflow, match="96"):
        decoder.prefill("a", [1] * 97)
    assert decoder.kv_bytes_in_use() == 0
    decoder.prefill("a", [1] * 95)
    decoder.prefill("b", [1])
    decoder.decode(["a", "b"], [1, 1])  # "a" now holds all 96
    with pytest.raises(ContextOverflow):
        decoder.decode(["b", "a"], [1, 1])
    assert decoder.sequence_length("b") == 2  # the failed step wrote nothing


def test_bad_calls_are_refused(decoder: LlamaDecoder) -> None:
    decoder.prefill("a", [1])
    with pytest.raises(GenerationError, match="outside the vocabulary"):
        decoder.decode(["a"], [300])
    with pytest.raises(GenerationError, match="twice"):
        decoder.decode(["a", "a"], [1, 1])
    with pytest.raises(GenerationError, match="2 tokens"):
        decoder.decode(["a"], [1, 2])
    with pytest.raises(GenerationError, match="at least one"):
        decoder.prefill("b", [])


def test_tied_embeddings_and_grouped_query_attention_variants() -> None:
    # one kv head shared by all query heads, and the output projection tied to the embedding
    config = LlamaConfig(
        vocab_size=50, dim=32, n_layers=1, n_heads=4, n_kv_heads=1, ffn_dim=64, max_context=32
    )
    model = random_model(config=config)
    assert model.lm_head is None
    decoder = LlamaDecoder(model)
    tokens = [1, 2, 3, 4, 5]
    with torch.inference_mode():
        reference = model(torch.tensor([tokens]))[0, -1]
    torch.testing.assert_close(decoder.prefill("a", tokens), reference, atol=1e-5, rtol=1e-5)
