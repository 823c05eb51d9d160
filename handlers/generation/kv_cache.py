"""Per-sequence KV caches, grown in fixed blocks so the bytes held track the tokens held."""

from __future__ import annotations

import torch

from handlers.generation.interface import ContextOverflow


class SequenceCache:
    """One sequence's keys and values for every layer: `[layers, 2, kv_heads, capacity, head_dim]`.

    Capacity grows in `block_tokens` steps (one copy per block), so the allocation stays
    within one block of the tokens held and a scheduler's byte budget stays honest.
    """

    def __init__(
        self,
        *,
        layers: int,
        kv_heads: int,
        head_dim: int,
        max_tokens: int,
        block_tokens: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self._shape = (layers, 2, kv_heads, 0, head_dim)
        self._max_tokens = max_tokens
        self._block_tokens = block_tokens
        self._dtype = dtype
        self._device = device
        self._data = torch.empty(self._shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def capacity(self) -> int:
        """Tokens the current allocation can hold."""
        return self._data.shape[3]

    def nbytes(self) -> int:
        """Bytes allocated for this sequence."""
        return self._data.numel() * self._data.element_size()

    def reserve(self, new_tokens: int) -> None:
        """Make room for `new_tokens` more, or raise `ContextOverflow` leaving the cache as is."""
        needed = self.length + new_tokens
        if needed > self._max_tokens:
            raise ContextOverflow(
                f"{needed} tokens exceed the model's context of {self._max_tokens}"
            )
        if needed <= self.capacity:
            return
        blocks = -(-needed // self._block_tokens)
        capacity = min(blocks * self._block_tokens, self._max_tokens)
        layers, two, kv_heads, _, head_dim = self._shape
        shape = (layers, two, kv_heads, capacity, head_dim)
        grown = torch.empty(shape, dtype=self._dtype, device=self._device)
        grown[:, :, :, : self.length] = self._data[:, :, :, : self.length]
        self._data = grown

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store `[kv_heads, n, head_dim]` keys/values after the committed length (see `commit`)."""
        n = keys.shape[1]
        self._data[layer, 0, :, self.length : self.length + n] = keys
        self._data[layer, 1, :, self.length : self.length + n] = values

    def keys_values(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of the first `end` positions' keys and values of `layer`."""
        return self._data[layer, 0, :, :end], self._data[layer, 1, :, :end]

    def commit(self, new_tokens: int) -> None:
        """Count the tokens every layer has now written (after a whole forward pass)."""
        self.length += new_tokens
