"""The markdown summary of `python -m benchmarks.generative`: each run's figures and the
issue 16 targets judged from them."""

from __future__ import annotations

from typing import Any


def _f(value: Any, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _summary(run: dict[str, Any] | None) -> dict[str, Any] | None:
    return run.get("summary") if run else None


def _runs_table(rows: list[tuple[str, dict[str, Any] | None]]) -> list[str]:
    lines = [
        "| run | done/sent (err) | output tok/s | goodput req/s | TTFT p50 / p99 ms "
        "| TPOT p50 ms | ITL p50 / p99 ms | E2E p50 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, s in rows:
        if s is None:
            lines.append(f"| {label} | not run | | | | | | |")
            continue
        lines.append(
            f"| {label} | {s['completed']}/{s['requests']} ({s['errors']}) "
            f"| {_f(s['output_tokens_per_s'], 1)} | {_f(s['goodput_rps'], 2)} "
            f"| {_f(s['ttft_ms']['p50'])} / {_f(s['ttft_ms']['p99'])} "
            f"| {_f(s['tpot_ms']['p50'])} | {_f(s['itl_ms']['p50'])} / {_f(s['itl_ms']['p99'])} "
            f"| {_f(s['e2e_ms']['p50'])} |"
        )
    return lines


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(target, bar, measured, met) for each target the run covered."""
    out: list[tuple[str, str, str, bool | None]] = []
    cb = _summary(results["batching"].get("continuous"))
    st = _summary(results["batching"].get("static"))
    if cb and st:
        r = _ratio(cb["output_tokens_per_s"], st["output_tokens_per_s"])
        out.append(("tokens/s, 16 streams, lengths 1-128: continuous / static", "≥ 4x",
                    f"{_f(r, 2)}x", r is not None and r >= 4))  # fmt: skip
    ours = _summary(results["torchserve"].get("ours"))
    ts = _summary(results["torchserve"].get("torchserve"))
    if ours and ts:
        r = _ratio(ours["output_tokens_per_s"], ts["output_tokens_per_s"])
        t = _ratio(ours["ttft_ms"]["p50"], ts["ttft_ms"]["p50"])
        out.append(("same TorchServe-style archive, 16 streams: tokens/s ours / TorchServe",
                    "≥ 2x", f"{_f(r, 2)}x", r is not None and r >= 2))  # fmt: skip
        out.append(
            ("... TTFT p50 ours / TorchServe", "≤ 0.5", _f(t, 2), t is not None and t <= 0.5)
        )
    ttft, engine = results.get("ttft"), results.get("engine")
    if ttft and engine and ttft["probe_ttft_ms"]:
        probes = ttft["probe_ttft_ms"]
        p50 = probes[len(probes) // 2]
        step = ttft["stream_itl_p50_ms"] or engine["decode_b16_ms"]
        bar = engine["prefill_ms"] + 2 * step
        out.append((
            "TTFT p50 of a request arriving while 15 run",
            f"≤ prefill {_f(engine['prefill_ms'])} + 2 x step {_f(step)} = {_f(bar)} ms",
            f"{_f(p50)} ms", p50 <= bar,
        ))  # fmt: skip
    cancel = results.get("cancel")
    if cancel:
        steps = cancel["steps_counted_between"]
        out.append((
            "a disconnected stream's slot reused by the next step",
            "queued request's first token ≤ 2 steps after the disconnect",
            f"{_f(steps)} steps counted, "
            f"{_f(cancel['ms_from_disconnect_to_queued_first_token'])} ms "
            f"(step ≈ {_f(cancel['stream_itl_p50_ms'])} ms)",
            steps <= 2,
        ))  # fmt: skip
    soak = results.get("soak")
    if soak:
        s, rss = soak["summary"], [mib for _, mib in soak["rss_mib"]]
        # the second half, as benchmarks/soak.py judges it: the first minutes fill the
        # allocator's arenas and the caches of every prompt length once
        half = rss[len(rss) // 2 :]
        growth = (half[-1] - half[0]) / half[0] if len(half) > 1 else None
        flat = growth is not None and growth < 0.02
        clean = s["errors"] == 0 and soak["running_after"] == 0 and soak["waiting_after"] == 0
        kv = [held for _, held, _ in soak.get("kv_mib", [])]
        kv_after = soak.get("kv_bytes_after"), soak.get("kv_reserved_after")
        kv_clean = kv_after == (0, 0)
        out.append((
            f"soak {s['span_s']:.0f} s, random disconnects",
            "RSS flat (< 2% growth over the second half), KV cache back to 0, every request "
            "answered or cancelled, nothing left running",
            f"RSS {_f(rss[0] if rss else None)} at 5 s, {_f(half[0] if half else None)} at "
            f"half time, {_f(rss[-1] if rss else None)} MiB at the end; "
            f"KV held max {_f(max(kv) if kv else None, 1)} MiB, after "
            f"{_f(kv_after[0])}/{_f(kv_after[1])} bytes held/reserved; "
            f"{s['completed']} done, {s['cancelled']} cancelled, {s['errors']} errors; "
            f"running/waiting after: {_f(soak['running_after'])}/{_f(soak['waiting_after'])}",
            flat and clean and kv_clean,
        ))  # fmt: skip
    return out


def markdown(results: dict[str, Any]) -> str:
    """The report."""
    lines = [
        f"# Generative benchmarks {results['stamp']}",
        "",
        f"Load average before {results['load_before'][0]:.2f}, after "
        f"{results.get('load_after', [0.0])[0]:.2f} (2-core machine shared with other work).",
        "",
        "## Throughput runs (16 streams, output lengths uniform 1-128, greedy, ignore_eos)",
        "",
    ]
    ts = results["torchserve"].get("torchserve") or {}
    lines += _runs_table([
        ("continuous batching (ours, OpenAI API)", _summary(results["batching"].get("continuous"))),
        ("static batching (ours, OpenAI API)", _summary(results["batching"].get("static"))),
        ("TorchServe-style archive on ours (chunked /predictions)",
         _summary(results["torchserve"].get("ours"))),
        ("the same archive on TorchServe 0.12", _summary(ts)),
        ("llama-cpp-python's server, the same GGUF (Q4_1 kept quantized)",
         _summary(results.get("llamacpp"))),
    ])  # fmt: skip
    if "skipped" in ts:
        lines += ["", f"TorchServe skipped: {ts['skipped']}"]
    if "skipped" in (results.get("llamacpp") or {}):
        lines += ["", f"llama-cpp-python skipped: {results['llamacpp']['skipped']}"]
    engine = results.get("engine")
    if engine:
        lines += [
            "",
            "Engine alone (server stopped): prefill of the probe prompt "
            f"({engine['prompt_tokens']} tokens) {engine['prefill_ms']:.0f} ms, "
            f"decode step at batch 16 {engine['decode_b16_ms']:.0f} ms.",
        ]
    if results.get("ttft"):
        lines += ["", f"TTFT probes under 15 streams (ms): {results['ttft']['probe_ttft_ms']}"]
    for key, failure in (results.get("failures") or {}).items():
        lines += ["", f"Part {key} failed: {failure}"]
    lines += ["", "## Targets", "", "| target | bar | measured | met |", "|---|---|---|---|"]
    for name, bar, measured, met in targets(results):
        lines.append(f"| {name} | {bar} | {measured} | {'yes' if met else 'no'} |")
    return "\n".join(lines) + "\n"
