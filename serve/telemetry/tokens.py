"""Token figures of a generative model version, in plain numbers, rendered at scrape time.

Names follow vLLM's (`vllm:time_to_first_token_seconds` → `serve_time_to_first_token_seconds`),
so dashboards built for it read ours with a prefix change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from serve.telemetry.histogram import Buckets

_SECONDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
_LABELS = ["model_name", "model_version"]


class Figures(Protocol):
    """What the step scheduler reports about its sequences."""

    @property
    def running(self) -> int: ...

    @property
    def pending(self) -> int: ...

    steps: int

    def kv_usage(self) -> KVFigures | None: ...


class KVFigures(Protocol):
    """The executors' KV caches summed (handlers.messages.KVUsage)."""

    @property
    def in_use(self) -> int: ...

    @property
    def reserved(self) -> int: ...

    @property
    def budget(self) -> int | None: ...


class TokenMetrics:
    """One version's token histograms and counters; updated on the loop by the OpenAI door."""

    def __init__(self, figures: Figures | None = None) -> None:
        self.figures = figures
        self.ttft = Buckets(_SECONDS)
        self.itl = Buckets(_SECONDS)
        self.e2e = Buckets(_SECONDS)
        self.queue = Buckets(_SECONDS)
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.sequences: dict[str, int] = {}  # finished sequences by finish reason


def families(models: Iterable[tuple[str, str, TokenMetrics]]) -> Iterator[Metric]:
    """The exposition families of every generative version."""
    histograms = {
        "ttft": HistogramMetricFamily(
            "serve_time_to_first_token_seconds",
            "Time from a generation request's arrival to its first token",
            labels=_LABELS,
        ),
        "itl": HistogramMetricFamily(
            "serve_inter_token_latency_seconds",
            "Time between two tokens of one sequence (a chunk's tokens share its gap)",
            labels=_LABELS,
        ),
        "e2e": HistogramMetricFamily(
            "serve_e2e_request_latency_seconds",
            "Time from a generation request's arrival to its last token",
            labels=_LABELS,
        ),
        "queue": HistogramMetricFamily(
            "serve_request_queue_time_seconds",
            "Time a generation request waited for a slot in a step",
            labels=_LABELS,
        ),
    }
    prompt = CounterMetricFamily("serve_prompt_tokens", "Prompt tokens prefilled", labels=_LABELS)
    generated = CounterMetricFamily("serve_generation_tokens", "Tokens generated", labels=_LABELS)
    finished = CounterMetricFamily(
        "serve_request_success",
        "Generation sequences finished, by finish reason",
        labels=[*_LABELS, "finished_reason"],
    )
    running = GaugeMetricFamily(
        "serve_num_requests_running", "Sequences live in executors' steps", labels=_LABELS
    )
    waiting = GaugeMetricFamily(
        "serve_num_requests_waiting", "Generation requests queued for a slot", labels=_LABELS
    )
    steps = CounterMetricFamily(
        "serve_generation_steps", "Steps run by the step scheduler", labels=_LABELS
    )
    kv_in_use = GaugeMetricFamily(
        "serve_kv_cache_bytes", "Bytes the live sequences' KV caches hold", labels=_LABELS
    )
    kv_reserved = GaugeMetricFamily(
        "serve_kv_cache_reserved_bytes",
        "KV cache bytes reserved by admitted sequences (prompt plus max_tokens)",
        labels=_LABELS,
    )
    kv_budget = GaugeMetricFamily(
        "serve_kv_cache_budget_bytes", "The executors' KV cache budget", labels=_LABELS
    )
    kv_perc = GaugeMetricFamily(
        "serve_kv_cache_usage_perc",
        "Fraction of the KV cache budget reserved (vLLM's kv_cache_usage_perc)",
        labels=_LABELS,
    )
    for name, version, m in models:
        key = [name, version]
        for attr, family in histograms.items():
            buckets: Buckets = getattr(m, attr)
            family.add_metric(key, buckets.cumulative(), buckets.total)
        prompt.add_metric(key, m.prompt_tokens)
        generated.add_metric(key, m.generation_tokens)
        for reason, count in sorted(m.sequences.items()):
            finished.add_metric([*key, reason], count)
        if m.figures is not None:
            running.add_metric(key, m.figures.running)
            waiting.add_metric(key, m.figures.pending)
            steps.add_metric(key, m.figures.steps)
            kv = m.figures.kv_usage()
            if kv is not None:
                kv_in_use.add_metric(key, kv.in_use)
                kv_reserved.add_metric(key, kv.reserved)
                if kv.budget:
                    kv_budget.add_metric(key, kv.budget)
                    kv_perc.add_metric(key, kv.reserved / kv.budget)
    yield from histograms.values()
    yield from (prompt, generated, finished, running, waiting, steps)
    yield from (kv_in_use, kv_reserved, kv_budget, kv_perc)
