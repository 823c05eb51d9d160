"""A one-sequence generation loop over the engine's parts: the reference a scheduler must match.

The server's step scheduler interleaves many sequences; this runs one to its end, for
tests, benchmarks and scripts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from handlers.generation.interface import GenerationModel
from handlers.generation.sampling import SampledToken, Sampler, SamplingParams
from handlers.generation.text import FinishReason, SequenceText, clamp_max_tokens
from handlers.generation.tokenizer import Tokenizer


@dataclass(frozen=True, slots=True)
class Generation:
    """A finished sequence: its text, its tokens and why it ended."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    tokens: tuple[SampledToken, ...] = field(default=(), repr=False)


def generate(
    model: GenerationModel,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    *,
    params: SamplingParams | None = None,
    max_tokens: int | None = None,
    stop: Sequence[str] = (),
    seq_id: str = "generate",
    prefill_chunk: int = 512,
) -> Generation:
    """Prefill `prompt_ids` (in chunks), then decode until EOS, a stop string or the limit."""
    limit = clamp_max_tokens(max_tokens, len(prompt_ids), model.max_context)
    sampler = Sampler(params or SamplingParams(temperature=0.0))
    text = SequenceText(
        tokenizer.token_bytes,
        max_tokens=limit,
        eos_ids=tokenizer.eos_ids,
        stop=stop,
        skip_ids=tokenizer.special_ids,
    )
    pieces: list[str] = []
    sampled: list[SampledToken] = []
    try:
        for start in range(0, len(prompt_ids), prefill_chunk):
            logits = model.prefill(seq_id, prompt_ids[start : start + prefill_chunk])
        while True:
            token = sampler.sample(logits)
            sampled.append(token)
            delta = text.push(token.token_id)
            pieces.append(delta.text)
            if delta.finish_reason is not None:
                return Generation(
                    "".join(pieces),
                    tuple(t.token_id for t in sampled),
                    delta.finish_reason,
                    tuple(sampled),
                )
            logits = model.decode([seq_id], [token.token_id])[0]
    finally:
        if model.sequence_length(seq_id):
            model.release(seq_id)
