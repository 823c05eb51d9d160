"""A Llama-style decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU), inference only.

The forward pass takes a ragged batch flattened to `[tokens, dim]` plus one `Segment` per
sequence (Orca's selective batching): norms, projections and the MLP run over every token
at once, attention runs per sequence against that sequence's own cache. One path therefore
serves a prompt chunk, a batched decode step, or a mix of both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from handlers.generation.kv_cache import SequenceCache

AttentionMode = Literal["loop", "padded"]


@dataclass(frozen=True, slots=True)
class LlamaConfig:
    """Shape of a Llama-family decoder; the names are those of our checkpoint's config.json."""

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    max_context: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.dim // self.n_heads

    def to_json(self) -> dict[str, Any]:
        """The config as plain JSON values."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LlamaConfig:
        """Read a config written by `to_json`; a missing or unknown key raises ValueError."""
        fields = set(cls.__dataclass_fields__)
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"bad model config: {exc}") from None


@dataclass(frozen=True, slots=True)
class Segment:
    """One sequence's share of a flattened batch: `length` new tokens after `cache.length`."""

    cache: SequenceCache
    length: int


class _Linear(nn.Linear):
    """A bias-free projection, uninitialised: weights come from a checkpoint or `init_weights`."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False)

    def reset_parameters(self) -> None:
        # a random init of 135M parameters costs seconds that loading then overwrites
        pass


class _Embedding(nn.Embedding):
    """A token embedding left uninitialised (see `_Linear`)."""

    def reset_parameters(self) -> None:
        pass


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned scale."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # computed in float32 so bf16 weights keep the reference's normalisation
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


class Block(nn.Module):
    """One transformer layer: pre-norm attention and a pre-norm SwiGLU MLP, both residual."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        dim, head_dim = config.dim, config.head_dim
        self.attn_norm = RMSNorm(dim, config.norm_eps)
        self.q_proj = _Linear(dim, config.n_heads * head_dim)
        self.k_proj = _Linear(dim, config.n_kv_heads * head_dim)
        self.v_proj = _Linear(dim, config.n_kv_heads * head_dim)
        self.o_proj = _Linear(config.n_heads * head_dim, dim)
        self.ffn_norm = RMSNorm(dim, config.norm_eps)
        self.gate_proj = _Linear(dim, config.ffn_dim)
        self.up_proj = _Linear(dim, config.ffn_dim)
        self.down_proj = _Linear(config.ffn_dim, dim)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        """SwiGLU feed-forward."""
        out: torch.Tensor = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return out


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """HF's RoPE layout: the two halves of a head are the rotated pairs."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Llama(nn.Module):
    """The decoder's weights and its forward pass over segments of cached sequences."""

    def __init__(self, config: LlamaConfig, attention: AttentionMode = "loop") -> None:
        super().__init__()
        self.config = config
        self.attention = attention
        self.embed_tokens = _Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head: nn.Linear | None = None
        if not config.tie_embeddings:
            self.lm_head = _Linear(config.dim, config.vocab_size)
        cos, sin = self.rope_tables(config)
        self.rope_cos: torch.Tensor
        self.rope_sin: torch.Tensor
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @staticmethod
    def rope_tables(config: LlamaConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosines and sines of every position's rotary angles, `[max_context, head_dim]`."""
        inv_freq = 1.0 / config.rope_theta ** (
            torch.arange(0, config.head_dim, 2, dtype=torch.float64, device="cpu") / config.head_dim
        )
        positions = torch.arange(config.max_context, dtype=torch.float64, device="cpu")
        angles = torch.outer(positions, inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().float(), angles.sin().float()

    def init_weights(self, generator: torch.Generator, std: float = 0.02) -> None:
        """A fresh random init (for training a new model); norms start at one."""
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.endswith("norm.weight"):
                    param.fill_(1.0)
                else:
                    param.normal_(0.0, std, generator=generator)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Output projection (the embedding itself when tied), as float32."""
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(self.norm(hidden), weight).float()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Cache-free causal pass over `[batch, time]` tokens: `[batch, time, vocab]` logits.

        For training and as the reference the cached path must match.
        """
        config = self.config
        batch, time = tokens.shape
        dtype = self.embed_tokens.weight.dtype
        cos = self.rope_cos[:time].unsqueeze(1).to(dtype)
        sin = self.rope_sin[:time].unsqueeze(1).to(dtype)
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            assert isinstance(layer, Block)
            h = layer.attn_norm(x)
            q = layer.q_proj(h).view(batch, time, config.n_heads, config.head_dim)
            k = layer.k_proj(h).view(batch, time, config.n_kv_heads, config.head_dim)
            v = layer.v_proj(h).view(batch, time, config.n_kv_heads, config.head_dim)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            attended = F.scaled_dot_product_attention(
                q.transpose(1, 2),
                k.transpose(1, 2),
                v.transpose(1, 2),
                is_causal=True,
                enable_gqa=True,
            )
            x = x + layer.o_proj(attended.transpose(1, 2).reshape(batch, time, config.dim))
            x = x + layer.mlp(layer.ffn_norm(x))
        return self.logits(x)

    def forward_segments(self, tokens: torch.Tensor, segments: Sequence[Segment]) -> torch.Tensor:
        """Run `tokens` (the segments' new tokens, concatenated) and return each last logits.

        Every segment's cache must have room reserved; its new keys/values are written and
        committed here. Returns `[len(segments), vocab]`.
        """
        config = self.config
        positions = torch.cat(
            [torch.arange(seg.cache.length, seg.cache.length + seg.length) for seg in segments]
        ).to(tokens.device)
        cos = self.rope_cos[positions].unsqueeze(1).to(self.embed_tokens.weight.dtype)
        sin = self.rope_sin[positions].unsqueeze(1).to(self.embed_tokens.weight.dtype)
        x = self.embed_tokens(tokens)
        total = tokens.shape[0]
        for index, layer in enumerate(self.layers):
            assert isinstance(layer, Block)
            h = layer.attn_norm(x)
            q = layer.q_proj(h).view(total, config.n_heads, config.head_dim)
            k = layer.k_proj(h).view(total, config.n_kv_heads, config.head_dim)
            v = layer.v_proj(h).view(total, config.n_kv_heads, config.head_dim)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            attended = self._attend(index, q, k, v, segments)
            x = x + layer.o_proj(attended.reshape(total, config.dim))
            x = x + layer.mlp(layer.ffn_norm(x))
        for seg in segments:
            seg.cache.commit(seg.length)
        ends = torch.tensor([seg.length for seg in segments], device=tokens.device).cumsum(0) - 1
        return self.logits(x[ends])

    def _attend(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        segments: Sequence[Segment],
    ) -> torch.Tensor:
        """Causal attention of each segment's queries over its cache plus its new keys."""
        offset = 0
        for seg in segments:
            part = slice(offset, offset + seg.length)
            seg.cache.write(layer, k[part].transpose(0, 1), v[part].transpose(0, 1))
            offset += seg.length
        if self.attention == "padded" and all(seg.length == 1 for seg in segments):
            return self._attend_padded(layer, q, segments)
        out = torch.empty_like(q)
        offset = 0
        for seg in segments:
            past, n = seg.cache.length, seg.length
            keys, values = seg.cache.keys_values(layer, past + n)
            queries = q[offset : offset + n].transpose(0, 1).unsqueeze(0)
            mask = None
            if n > 1:
                # query i sees every cached position and the new ones up to itself
                mask = torch.ones(n, past + n, dtype=torch.bool, device=q.device).tril(past)
            attended = F.scaled_dot_product_attention(
                queries, keys.unsqueeze(0), values.unsqueeze(0), attn_mask=mask, enable_gqa=True
            )
            out[offset : offset + n] = attended[0].transpose(0, 1)
            offset += n
        return out

    def _attend_padded(
        self, layer: int, q: torch.Tensor, segments: Sequence[Segment]
    ) -> torch.Tensor:
        """One SDPA call for a decode step: caches copied into a padded batch plus a mask."""
        config = self.config
        lengths = [seg.cache.length + 1 for seg in segments]
        longest = max(lengths)
        shape = (len(segments), config.n_kv_heads, longest, config.head_dim)
        keys = q.new_zeros(shape)
        values = q.new_zeros(shape)
        for row, seg in enumerate(segments):
            k_seq, v_seq = seg.cache.keys_values(layer, lengths[row])
            keys[row, :, : lengths[row]] = k_seq
            values[row, :, : lengths[row]] = v_seq
        mask = torch.arange(longest, device=q.device).unsqueeze(0) < torch.tensor(
            lengths, device=q.device
        ).unsqueeze(1)
        attended = F.scaled_dot_product_attention(
            q.unsqueeze(2), keys, values, attn_mask=mask[:, None, None, :], enable_gqa=True
        )
        return attended.squeeze(2)
