"""A continuous-batching handler written the TorchServe 0.12 way, over our generation engine.

The archive of the ours-vs-TorchServe generative benchmark (benchmarks/generative.py): the
same SmolLM2 decoder and Stepper as `handler: text_generation`, behind TorchServe's own
contract (`continuousBatching: true`): each `handle` call is one step; a new request carries
its JSON body, a continuing one arrives as `{}` under the same `context.request_ids[idx]`;
`context.stopping_criteria[idx]` says whether the chunk returned for it is its last. A
request whose id is missing from a step left (its client went away): its cache is freed.

TorchServe's venv lacks our packages, so its worker imports `handlers.generation` through
a PYTHONPATH the benchmark builds (our `handlers` package, `gguf` and `tokenizers`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ts.torch_handler.base_handler import BaseHandler

from handlers.generation.checkpoint import load_model
from handlers.generation.stepper import BadGenerationRequest, Stepper


class GenerationHandler(BaseHandler):  # type: ignore[misc]
    """One worker's decoder and its live sequences, keyed by TorchServe's request ids."""

    def __init__(self) -> None:
        super().__init__()
        self.stepper: Stepper | None = None

    def initialize(self, context: Any) -> None:
        """Load the archive's `.gguf` file (its weights, tokenizer and chat template)."""
        model_dir = Path(context.system_properties["model_dir"])
        (path,) = sorted(model_dir.glob("*.gguf"))
        loaded = load_model(path)
        self.stepper = Stepper(loaded.decoder, loaded.tokenizer, loaded.chat_template)
        self.initialized = True

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        """One step over every live request; one JSON chunk per request."""
        stepper = self.stepper
        assert stepper is not None
        ids = [context.request_ids[idx] for idx in range(len(data))]
        gone = set(stepper.sequences) - set(ids)
        if gone:
            stepper.release(gone)
        results: list[str] = [""] * len(data)
        done = [False] * len(data)
        for idx, entry in enumerate(data):
            if not entry:
                continue  # continuing: TorchServe sends it without its input
            try:
                stepper.start(ids[idx], entry.get("body", entry.get("data")))
            except BadGenerationRequest as exc:
                results[idx], done[idx] = json.dumps({"error": str(exc)}), True
        live = [idx for idx in range(len(data)) if not done[idx]]
        outputs = stepper.step([ids[idx] for idx in live])
        for idx in live:
            output = outputs[ids[idx]]
            results[idx] = json.dumps(output.as_json())
            done[idx] = output.finish_reason is not None
        context.stopping_criteria = [_last(flag) for flag in done]
        return results


def _last(flag: bool) -> Any:
    return lambda _result: flag
