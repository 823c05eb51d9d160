"""Load a decoder from either of the two formats: our checkpoint folder, or a GGUF file.

Our format is a folder holding `config.json` (`model`: a `LlamaConfig`; `tokenizer`: the
byte tokenizer's specials; `chat_template`) and `model.pt` (the state dict, read with
`weights_only=True`, so loading never runs pickled code).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from handlers.generation.chat import ChatTemplate
from handlers.generation.decoder import LlamaDecoder
from handlers.generation.gguf_loader import GGUFModel
from handlers.generation.llama import AttentionMode, Llama, LlamaConfig
from handlers.generation.tokenizer import ByteTokenizer, Tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """What a generation handler needs: the model, its tokenizer, its chat template."""

    decoder: LlamaDecoder
    tokenizer: Tokenizer
    chat_template: ChatTemplate | None


def load_model(
    path: Path,
    *,
    dtype: torch.dtype = torch.float32,
    attention: AttentionMode = "loop",
    device: torch.device | str = "cpu",
) -> LoadedModel:
    """Load `path` (a `.gguf` file or a folder in our checkpoint format) onto `device`."""
    placement = _Placement(dtype, attention, torch.device(device))
    if path.suffix == ".gguf":
        return _load_gguf(path, placement)
    if (path / CONFIG_FILE).is_file():
        return _load_folder(path, placement)
    raise FileNotFoundError(f"{path} is neither a .gguf file nor a folder with {CONFIG_FILE}")


def save_checkpoint(
    folder: Path,
    model: Llama,
    *,
    tokenizer: dict[str, Any],
    chat_template: str | None,
) -> None:
    """Write `model` in our format; `tokenizer` is `ByteTokenizer`'s spec (see `load_model`)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    torch.save(state, folder / WEIGHTS_FILE)
    config = {
        "model": model.config.to_json(),
        "tokenizer": tokenizer,
        "chat_template": chat_template,
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


@dataclass(frozen=True, slots=True)
class _Placement:
    dtype: torch.dtype
    attention: AttentionMode
    device: torch.device


def _build(
    config: LlamaConfig, state: dict[str, torch.Tensor], placement: _Placement
) -> LlamaDecoder:
    model = Llama(config, attention=placement.attention).to(placement.device)
    # cast the weights, not the module: the rope tables stay float32
    weights = {k: v.to(placement.device, placement.dtype) for k, v in state.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    model.requires_grad_(False)
    return LlamaDecoder(model)


def _load_gguf(path: Path, placement: _Placement) -> LoadedModel:
    gguf_model = GGUFModel(path)
    config = gguf_model.config()
    decoder = _build(config, gguf_model.state_dict(), placement)
    tokenizer = gguf_model.tokenizer()
    source = gguf_model.chat_template()
    template = None
    if source is not None:
        bos = tokenizer.bos_id
        eos = min(tokenizer.eos_ids) if tokenizer.eos_ids else None
        template = ChatTemplate(
            source,
            bos_token="" if bos is None else tokenizer.token_str(bos),
            eos_token="" if eos is None else tokenizer.token_str(eos),
        )
    return LoadedModel(decoder, tokenizer, template)


def _load_folder(folder: Path, placement: _Placement) -> LoadedModel:
    raw = json.loads((folder / CONFIG_FILE).read_text())
    try:
        config = LlamaConfig.from_json(raw["model"])
        spec = raw["tokenizer"]
        if spec.get("type") != "bytes":
            raise ValueError(f"tokenizer.type {spec.get('type')!r} is not supported (only 'bytes')")
        tokenizer = ByteTokenizer(spec["specials"], bos=spec.get("bos"), eos=spec["eos"])
    except KeyError as exc:
        raise ValueError(f"{folder / CONFIG_FILE}: missing key {exc}") from None
    state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    decoder = _build(config, state, placement)
    source = raw.get("chat_template")
    template = None
    if source is not None:
        template = ChatTemplate(
            source,
            bos_token=spec.get("bos") or "",
            eos_token=spec["eos"][0] if spec["eos"] else "",
        )
    return LoadedModel(decoder, tokenizer, template)
