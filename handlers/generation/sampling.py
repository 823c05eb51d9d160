"""Choosing the next token from a sequence's logits: greedy, temperature, top-k, top-p, seeds."""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """A sequence's sampling settings, checked once when the request arrives.

    temperature 0 means greedy. `top_k` 0 and `top_p` 1 switch those filters off. `seed`
    makes the draws reproducible: the same seed, prompt and model give the same tokens.
    `logprobs` asks for the chosen token's log-probability; `top_logprobs` for that many
    alternatives too. Log-probabilities are those of the model's own distribution, before
    temperature and filtering (as vLLM reports them by default).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 100.0:
            raise ValueError(f"temperature must be within [0, 100], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be within (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be 0 (off) or positive, got {self.top_k}")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(
                f"top_logprobs must be within [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs}"
            )


@dataclass(frozen=True, slots=True)
class SampledToken:
    """The chosen token and, when asked, its log-probability and the top alternatives."""

    token_id: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


class Sampler:
    """One sequence's sampler; its own generator keeps a seeded sequence reproducible
    whatever else shares its batch."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self._generator = torch.Generator()
        if params.seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(params.seed)

    def sample(self, logits: torch.Tensor) -> SampledToken:
        """Pick a token from one `[vocab]` row of float logits."""
        params = self.params
        logits = logits.float()
        if params.temperature == 0.0:
            token = int(logits.argmax())
        else:
            token = self._draw(logits / params.temperature)
        if not params.logprobs and not params.top_logprobs:
            return SampledToken(token)
        logprobs = torch.log_softmax(logits, dim=-1)
        top: tuple[tuple[int, float], ...] = ()
        if params.top_logprobs:
            values, ids = logprobs.topk(params.top_logprobs)
            top = tuple(zip(ids.tolist(), values.tolist(), strict=True))
        return SampledToken(token, float(logprobs[token]), top)

    def _draw(self, scaled: torch.Tensor) -> int:
        params = self.params
        if params.top_k and params.top_k < scaled.shape[-1]:
            kth = scaled.topk(params.top_k).values[-1]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # keep the smallest head whose mass reaches top_p: a token stays if the mass
            # before it is still short of top_p (so the most likely token always stays)
            before = sorted_probs.cumsum(0) - sorted_probs
            sorted_probs = sorted_probs.masked_fill(before >= params.top_p, 0.0)
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=self._generator))
