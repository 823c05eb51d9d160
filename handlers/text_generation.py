"""The built-in handler for Llama-style decoders (`handler: text_generation`): no code to write.

It loads the archive's weights (a `.gguf` file, or a folder in our checkpoint format:
handlers.generation.checkpoint) with their tokenizer and chat template, and runs under the
server's step scheduler with TorchServe's continuous-batching contract: each call is one
step over the live requests (new ones with their body, continuing ones as `{}`), one JSON
chunk per request, and `context.stopping_criteria` marks each request's last chunk.

A request body is a text prompt, or a JSON object: `prompt` or `messages` (rendered with the
model's chat template), `max_tokens`, `temperature` (default 1; 0 is greedy), `top_p`,
`top_k`, `seed`, `stop`, `ignore_eos`. A chunk is `{"text", "token_ids", "finish_reason",
"prompt_tokens", "completion_tokens"}`; a request the model cannot run is answered 400 with
`{"error": ...}`. model-config.yaml `handler:` keys: `model_path` (in the archive; default:
its `.gguf` file or the archive folder), `prefill_tokens_per_step` (256), `kv_cache_mb` (the
executor's KV cache budget; default: room for `batchSize` sequences at the full context),
`dtype` (`float32`, `bfloat16`). With `continuousBatching: false` a batch runs to its end in
one call (static batching; chunks go out as intermediate responses), for comparing the two.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from handlers.context import Context
from handlers.generation.checkpoint import load_model
from handlers.generation.stepper import DEFAULT_PREFILL_BUDGET, BadGenerationRequest, Stepper
from handlers.messages import KVUsage
from handlers.streaming import send_intermediate_predict_response

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TextGenerationHandler:
    """One executor's decoder and its live sequences, keyed by request id."""

    def __init__(self) -> None:
        self.stepper: Stepper | None = None
        self.continuous = True

    def initialize(self, context: Context) -> None:
        """Load the weights, tokenizer and chat template named by the archive."""
        properties = context.system_properties
        model_dir = Path(properties["model_dir"])
        options = context.model_yaml_config.get("handler") or {}
        self.continuous = context.model_yaml_config.get("continuousBatching", True) is not False
        path = _weights_path(model_dir, options.get("model_path"), context.manifest or {})
        dtype_name = str(options.get("dtype", "float32"))
        if dtype_name not in _DTYPES:
            raise ValueError(f"handler.dtype must be one of {sorted(_DTYPES)}, got {dtype_name!r}")
        gpu = properties.get("gpu_id")
        device = f"cuda:{gpu}" if gpu is not None and torch.cuda.is_available() else "cpu"
        loaded = load_model(path, dtype=_DTYPES[dtype_name], device=device)
        budget = int(options.get("prefill_tokens_per_step", DEFAULT_PREFILL_BUDGET))
        decoder = loaded.decoder
        kv_mb = options.get("kv_cache_mb")
        if kv_mb is None:
            sequences = max(1, int(properties.get("batch_size") or 1))
            kv_budget = sequences * decoder.max_context * decoder.kv_bytes_per_token
        elif isinstance(kv_mb, bool) or not isinstance(kv_mb, int | float) or kv_mb <= 0:
            raise ValueError(f"handler.kv_cache_mb must be a positive number, got {kv_mb!r}")
        else:
            kv_budget = int(kv_mb * 2**20)
        self.stepper = Stepper(
            decoder,
            loaded.tokenizer,
            loaded.chat_template,
            prefill_budget=budget,
            kv_budget_bytes=kv_budget,
        )
        logger.info(
            "Loaded %s on %s (max context %d, KV cache budget %.1f MiB)",
            path,
            device,
            decoder.max_context,
            kv_budget / 2**20,
        )

    def kv_cache_usage(self) -> KVUsage | None:
        """The KV cache after the last step (the server's KV gauges read it)."""
        return None if self.stepper is None else self.stepper.kv_usage()

    def release_sequences(self, request_ids: list[str]) -> None:
        """Sequences that left without finishing (client gone, deadline): free their caches."""
        if self.stepper is not None:
            self.stepper.release(request_ids)

    def handle(self, data: list[dict[str, Any]], context: Context) -> list[Any]:
        """One step over the batch (continuous), or the batch to its end (static)."""
        stepper = self.stepper
        assert stepper is not None, "initialize() has not run"
        ids = [context.request_ids[idx] for idx in range(len(data))] if context.request_ids else []
        # as in TorchServe, an id missing from this step left the batch: drop its state
        gone = set(stepper.sequences) - set(ids)
        if gone:
            stepper.release(gone)
        results: list[Any] = [None] * len(data)
        done = [False] * len(data)
        for idx, entry in enumerate(data):
            if not entry:
                continue  # a continuing sequence
            body = entry.get("body", entry.get("data"))
            try:
                stepper.start(ids[idx], body)
            except BadGenerationRequest as exc:
                context.set_response_status(400, "Bad Request", idx)
                results[idx] = {"error": str(exc)}
                done[idx] = True
        live = [i for i in range(len(data)) if not done[i]]
        if self.continuous:
            self._step(stepper, ids, live, results, done)
        else:
            while live:
                self._step(stepper, ids, live, results, done)
                going = {i: ids[i] for i in live if not done[i]}
                if going:  # one chunk to each request still generating; the rest wait
                    send_intermediate_predict_response(
                        results, going, "Intermediate Prediction success", 200, context
                    )
                live = list(going)
        context.stopping_criteria = [_always(d) for d in done]
        return results

    @staticmethod
    def _step(
        stepper: Stepper, ids: list[str], live: list[int], results: list[Any], done: list[bool]
    ) -> None:
        outputs = stepper.step([ids[i] for i in live])
        for i in live:
            output = outputs[ids[i]]
            results[i] = output.as_json()
            done[i] = output.finish_reason is not None


def _always(value: bool) -> Callable[[Any], bool]:
    def criterion(_result: Any) -> bool:
        return value

    return criterion


def _weights_path(model_dir: Path, configured: Any, manifest: dict[str, Any]) -> Path:
    """`handler.model_path`, else the manifest's serialized file, else the one `.gguf` file,
    else the archive folder itself (our checkpoint format)."""
    if configured:
        path = (model_dir / str(configured)).resolve()
        if not path.is_relative_to(model_dir.resolve()):
            raise ValueError(f"handler.model_path {configured!r} leaves the archive")
        return path
    serialized = (manifest.get("model") or {}).get("serializedFile")
    if (
        isinstance(serialized, str)
        and serialized.endswith(".gguf")
        and (model_dir / serialized).exists()
    ):
        return model_dir / serialized
    ggufs = sorted(model_dir.glob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    return model_dir
