"""Adaptive dispatch seen from outside: a lone request is not held for max_batch_delay, unless
the operator asks for TorchServe's fixed waiting. Read from the queue-time histogram."""

from __future__ import annotations

from tests.helpers import handlers as src
from tests.helpers.clients import http, metric_samples
from tests.helpers.server import Server, ServerFactory, model_folder


def queue_buckets(server: Server, model: str) -> dict[str, float]:
    """Cumulative counts of serve_queue_seconds by upper bound, for one model."""
    samples = metric_samples(server, "serve_queue_seconds_bucket")
    return {
        dict(labels)["le"]: value
        for labels, value in samples.items()
        if dict(labels)["model_name"] == model
    }


def one_request(server: Server, model: str) -> dict[str, float]:
    """Send a single request; the change in each queue-time bucket."""
    before = queue_buckets(server, model)
    assert http("POST", f"{server.inference}/predictions/{model}", b"x")[0] == 200
    after = queue_buckets(server, model)
    return {le: after[le] - before.get(le, 0.0) for le in after}


def test_a_lone_request_is_dispatched_at_once(server: Server) -> None:
    # A model of its own: the shared echo model's recent concurrency (other tests' bursts)
    # would rightly make it wait for batch-mates. batch_size 8, max_batch_delay 200 ms, and
    # nothing else is coming, so no wait.
    model_folder(server.root / "store", "lone", src.ECHO)
    url = f"{server.management}/models?url=lone&batch_size=8&max_batch_delay=200&initial_workers=1"
    assert http("POST", url)[0] == 200
    try:
        change = one_request(server, "lone")
        assert change["0.1"] == 1, change
    finally:
        assert http("DELETE", f"{server.management}/models/lone")[0] == 200


def test_fixed_batching_waits_the_whole_delay_for_a_lone_request(
    make_server: ServerFactory,
) -> None:
    server = make_server(
        {"echo": src.ECHO},
        adaptive_batching=False,
        models={"echo": {"1.0": {"batch_size": 8, "max_batch_delay": 300}}},
    )
    change = one_request(server, "echo")
    # it waited at least max_batch_delay: not in any bucket at or below 0.25 s
    assert change["0.25"] == 0, change
    assert change["+Inf"] == 1, change


def test_compute_time_per_batch_is_its_own_histogram(server: Server) -> None:
    """serve_batch_seconds: the handler's time per batch, apart from the queue time."""
    key = (("le", "0.025"), ("model_name", "echo"), ("model_version", "1.0"))
    count_key = (("model_name", "echo"), ("model_version", "1.0"))
    before = metric_samples(server, "serve_batch_seconds_bucket")
    count_before = metric_samples(server, "serve_batch_seconds_count").get(count_key, 0.0)
    sum_before = metric_samples(server, "serve_batch_seconds_sum").get(count_key, 0.0)
    body = b'{"sleep": 0.05}'
    headers = {"Content-Type": "application/json"}
    status, _ = http("POST", f"{server.inference}/predictions/echo", body, headers=headers)
    assert status == 200
    after = metric_samples(server, "serve_batch_seconds_bucket")
    assert metric_samples(server, "serve_batch_seconds_count")[count_key] == count_before + 1
    assert metric_samples(server, "serve_batch_seconds_sum")[count_key] - sum_before >= 0.05
    assert after[key] == before.get(key, 0.0), "a 50 ms batch is not under 25 ms"
