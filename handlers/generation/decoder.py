"""`LlamaDecoder`: our `GenerationModel` over a `Llama` module and per-sequence KV caches."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from handlers.generation.interface import GenerationError, UnknownSequence
from handlers.generation.kv_cache import SequenceCache
from handlers.generation.llama import Llama, Segment

BLOCK_TOKENS = 64


class LlamaDecoder:
    """Owns the KV caches of one executor's live sequences and runs prefill/decode steps."""

    def __init__(self, model: Llama, *, block_tokens: int = BLOCK_TOKENS) -> None:
        self.model = model.eval()
        self._block_tokens = block_tokens
        self._caches: dict[str, SequenceCache] = {}
        config = model.config
        # caches live where the weights do (the executor's device)
        self._dtype = model.embed_tokens.weight.dtype
        self._device = model.embed_tokens.weight.device
        element = torch.empty((), dtype=self._dtype).element_size()
        self._kv_bytes_per_token = (
            config.n_layers * 2 * config.n_kv_heads * config.head_dim * element
        )

    @property
    def vocab_size(self) -> int:
        """Width of the logits rows."""
        return self.model.config.vocab_size

    @property
    def max_context(self) -> int:
        """Most tokens one sequence may hold."""
        return self.model.config.max_context

    @property
    def kv_bytes_per_token(self) -> int:
        """KV bytes one cached token costs (all layers, keys and values)."""
        return self._kv_bytes_per_token

    def kv_bytes_in_use(self) -> int:
        """Bytes allocated by live sequences' caches (within one block of the tokens held)."""
        return sum(cache.nbytes() for cache in self._caches.values())

    def sequence_length(self, seq_id: str) -> int:
        """Tokens cached for `seq_id`."""
        cache = self._caches.get(seq_id)
        return 0 if cache is None else cache.length

    def prefill(self, seq_id: str, token_ids: Sequence[int]) -> torch.Tensor:
        """Append a prompt chunk to `seq_id` (creating its cache); the last position's logits."""
        return self.step([], [], [(seq_id, token_ids)])[1][0]

    def decode(self, seq_ids: Sequence[str], token_ids: Sequence[int]) -> torch.Tensor:
        """One token for each of `seq_ids` (distinct, already prefilled); `[n, vocab]` logits."""
        return self.step(seq_ids, token_ids, [])[0]

    def step(
        self,
        seq_ids: Sequence[str],
        token_ids: Sequence[int],
        chunks: Sequence[tuple[str, Sequence[int]]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A decode step of `seq_ids` and prompt `chunks` in one forward pass (one read of the
        weights): `([n, vocab], [len(chunks), vocab])`, the last logits of each."""
        if len(seq_ids) != len(token_ids):
            raise GenerationError(f"{len(seq_ids)} sequences but {len(token_ids)} tokens")
        named = [*seq_ids, *(seq_id for seq_id, _ in chunks)]
        if len(set(named)) != len(named):
            raise GenerationError("a sequence appears twice in one step")
        if any(not chunk for _, chunk in chunks):
            raise GenerationError("prefill needs at least one token")
        missing = [seq_id for seq_id in seq_ids if seq_id not in self._caches]
        if missing:
            raise UnknownSequence(f"no cache for sequences {missing}")
        caches = [self._caches[seq_id] for seq_id in seq_ids]
        fresh = {s: self._new_cache() for s, _ in chunks if s not in self._caches}
        prompts = [(self._caches.get(s) or fresh[s], chunk) for s, chunk in chunks]
        # reserve every row first, so an overflow leaves all caches untouched
        for cache in caches:
            cache.reserve(1)
        for cache, chunk in prompts:
            cache.reserve(len(chunk))
        self._caches.update(fresh)
        tokens = [*token_ids, *(t for _, chunk in chunks for t in chunk)]
        segments = [Segment(c, 1) for c in caches] + [Segment(c, len(t)) for c, t in prompts]
        try:
            logits = self._run(tokens, segments)
        except Exception:
            for seq_id in fresh:
                del self._caches[seq_id]
            raise
        return logits[: len(caches)], logits[len(caches) :]

    def _new_cache(self) -> SequenceCache:
        config = self.model.config
        return SequenceCache(
            layers=config.n_layers,
            kv_heads=config.n_kv_heads,
            head_dim=config.head_dim,
            max_tokens=config.max_context,
            block_tokens=self._block_tokens,
            dtype=self._dtype,
            device=self._device,
        )

    def release(self, seq_id: str) -> None:
        """Drop `seq_id`'s cache; its memory is freed once no tensor refers to it."""
        if self._caches.pop(seq_id, None) is None:
            raise UnknownSequence(f"no cache for sequence {seq_id!r}")

    def _run(self, token_ids: Sequence[int], segments: list[Segment]) -> torch.Tensor:
        vocab = self.vocab_size
        bad = [t for t in token_ids if not 0 <= t < vocab]
        if bad:
            raise GenerationError(f"token ids {bad[:5]} are outside the vocabulary of {vocab}")
        tokens = torch.tensor(list(token_ids), dtype=torch.long, device=self._device)
        with torch.inference_mode():
            return self.model.forward_segments(tokens, segments)
