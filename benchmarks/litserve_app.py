"""A benchmark archive served by LitServe, run with `benchmarks/.venv-litserve`'s Python.

`python benchmarks/litserve_app.py --archive tiny.mar --port P --batch-size 8
--batch-delay-ms 5 --workers 1` loads the TorchScript file inside the `.mar` (the archive both
other servers load) and decodes and answers requests with the benchmark handler's own
functions (`to_tensor`, `answer` from bench_handler.py), so the three servers do the same work.
Batching is set up as LitServe's documentation says: `max_batch_size` and `batch_timeout`
(seconds) on the `LitAPI`, with `batch` / `unbatch` stacking and splitting tensors.

LitServe reads a request body as JSON (or a form), so only JSON payloads (the tiny model's)
are measured; raw tensor and JPEG bodies have no LitServe equivalent without changing the
payload.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
import zipfile
from pathlib import Path
from typing import Any

import litserve as ls
import torch


def _handler_functions() -> types.ModuleType:
    """bench_handler.py, without TorchServe installed (only its functions are used)."""
    base = types.ModuleType("ts.torch_handler.base_handler")
    base.BaseHandler = object  # type: ignore[attr-defined]
    for name in ("ts", "ts.torch_handler"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["ts.torch_handler.base_handler"] = base
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_handler

    return bench_handler


HANDLER = _handler_functions()


def _weights(archive: Path) -> Path:
    """The serialized TorchScript file inside a .mar, extracted to a temp folder."""
    folder = Path(tempfile.mkdtemp(prefix="litserve-model-"))
    with zipfile.ZipFile(archive) as mar:
        (name,) = [n for n in mar.namelist() if n.endswith(".pt")]
        return Path(mar.extract(name, folder))


class BenchAPI(ls.LitAPI):
    """The benchmark model: JSON features in, the handler's answer out."""

    def __init__(self, weights: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weights = weights

    def setup(self, device: str) -> None:
        self.model = torch.jit.load(str(self.weights), map_location=device).eval()

    # no annotation on `request`: LitServe then hands over the body parsed as JSON
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return HANDLER.to_tensor(request, "application/json")

    def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if x.dim() == 1:  # an unbatched request (max_batch_size 1)
                return self.model(x.unsqueeze(0))[0]
            return self.model(x)

    def unbatch(self, output: torch.Tensor) -> list[torch.Tensor]:
        return list(output)

    def encode_response(self, output: torch.Tensor) -> Any:
        return HANDLER.answer(output)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--batch-delay-ms", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    api = BenchAPI(
        _weights(args.archive),
        max_batch_size=args.batch_size,
        batch_timeout=args.batch_delay_ms / 1000 if args.batch_size > 1 else 0.0,
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers)
    server.run(port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
