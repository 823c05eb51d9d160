"""The contract between a step scheduler and a decoder model (see docs/generation.md).

One `GenerationModel` per executor thread owns the KV caches of that executor's live
sequences; the scheduler names sequences by id and never touches a cache itself, so a model
may lay its caches out however it likes (per-sequence blocks, slots, pages).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # the loop may import this module; only the executor side has torch loaded
    import torch


class GenerationError(Exception):
    """A call the model cannot honour; the scheduler turns it into that sequence's error."""


class UnknownSequence(GenerationError, KeyError):
    """`decode` or `release` named a sequence that has no cache (never prefilled, or released)."""


class ContextOverflow(GenerationError, ValueError):
    """The tokens would take a sequence past `max_context`; nothing was written to its cache."""


@runtime_checkable
class GenerationModel(Protocol):
    """A decoder whose live sequences' KV caches it owns, driven one step at a time.

    Calls come from one executor thread; a model need not be thread-safe.
    """

    @property
    def vocab_size(self) -> int:
        """Width of the logits rows."""
        ...

    @property
    def max_context(self) -> int:
        """Most tokens (prompt + generated) one sequence may hold."""
        ...

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one cached token costs, so a scheduler can budget admissions."""
        ...

    def kv_bytes_in_use(self) -> int:
        """Bytes the caches of all live sequences hold now (allocated, not only filled)."""
        ...

    def sequence_length(self, seq_id: str) -> int:
        """Tokens cached for `seq_id` (0 when it has no cache)."""
        ...

    def prefill(self, seq_id: str, token_ids: Sequence[int]) -> torch.Tensor:
        """Append `token_ids` to `seq_id`'s cache (creating it) and return the last logits.

        Callable again with the next chunk of a long prompt (chunked prefill); the result
        is a float32 `[vocab_size]` row for the position after the last token given.
        """
        ...

    def decode(self, seq_ids: Sequence[str], token_ids: Sequence[int]) -> torch.Tensor:
        """One batched step: append one token to each live sequence, return `[n, vocab]` logits.

        The sequences may hold different lengths; row i belongs to `seq_ids[i]`.
        """
        ...

    def step(
        self,
        seq_ids: Sequence[str],
        token_ids: Sequence[int],
        chunks: Sequence[tuple[str, Sequence[int]]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`decode(seq_ids, token_ids)` and a `prefill` of each `(seq_id, tokens)` chunk in
        one pass: `([n, vocab], [len(chunks), vocab])`. A sequence appears once per step."""
        ...

    def release(self, seq_id: str) -> None:
        """Free `seq_id`'s cache now; a later call naming it raises `UnknownSequence`."""
        ...
