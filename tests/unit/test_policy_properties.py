"""Properties of the batching policy and of the Batcher that applies it.

`decide` is pure: Hypothesis draws the whole input space. The Batcher runs on a real asyncio
loop with stand-in executors (the test's own Runner: it "runs" a batch by answering each
request with its id after a drawn delay, one batch at a time, in order, as an executor thread
does), real time and delays of a few milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.messages import BatchFailure, Output
from serve.batching.batcher import Batcher
from serve.batching.policy import Take, Wait, decide
from serve.errors import ServeError
from serve.request import InferenceRequest

# --- decide ---------------------------------------------------------------------------------

seconds = st.floats(min_value=0.0, max_value=10.0, allow_nan=False)
decisions = st.fixed_dictionaries(
    {
        "pending": st.integers(min_value=1, max_value=1000),
        "oldest_age": seconds,
        "batch_size": st.integers(min_value=1, max_value=256),
        "max_delay": seconds,
        "gatherable": st.integers(min_value=1, max_value=1000),
        "arrival_rate": st.one_of(
            st.floats(min_value=0.0, max_value=1e9, allow_nan=False), st.just(float("inf"))
        ),
    }
)


@given(decisions)
def test_a_batch_never_exceeds_batch_size_nor_what_is_pending(args: dict[str, Any]) -> None:
    decision = decide(**args)
    if isinstance(decision, Take):
        assert 1 <= decision.count <= min(args["batch_size"], args["pending"])


@given(decisions)
def test_a_full_queue_or_an_expired_delay_is_taken_at_once(args: dict[str, Any]) -> None:
    decision = decide(**args)
    if args["pending"] >= args["batch_size"]:
        assert decision == Take(int(args["batch_size"]))
    if args["oldest_age"] >= args["max_delay"]:
        assert isinstance(decision, Take)


@given(decisions)
def test_a_wait_never_outlasts_the_oldest_requests_remaining_delay(args: dict[str, Any]) -> None:
    decision = decide(**args)
    if isinstance(decision, Wait):
        remaining = args["max_delay"] - args["oldest_age"]
        assert 0 < decision.seconds <= remaining
        assert args["pending"] < args["batch_size"]


@given(decisions)
def test_a_fixed_policy_takes_only_a_full_batch_or_at_the_delay(args: dict[str, Any]) -> None:
    """adaptive_batching=false (gatherable=batch_size, infinite rate): TorchServe's rule."""
    fixed = {**args, "gatherable": args["batch_size"], "arrival_rate": float("inf")}
    decision = decide(**fixed)
    full = args["pending"] >= args["batch_size"]
    expired = args["oldest_age"] >= args["max_delay"]
    assert isinstance(decision, Take) == (full or expired)


# --- the Batcher ----------------------------------------------------------------------------


@dataclass(eq=False)  # identity: the batcher keys its executors by object
class StandIn:
    """The test's executor: runs its batches one at a time, in order, after drawn delays."""

    name: str
    batcher: Batcher
    delays: itertools.cycle[float]
    fail_every: int
    seen: list[list[InferenceRequest]]
    retiring: bool = False
    stopped: bool = False
    inbox: list[list[InferenceRequest]] = field(default_factory=list)

    def run(self, batch: list[InferenceRequest]) -> None:
        assert len(batch) <= self.batcher.batch_size
        assert all(not r.done for r in batch), "a cancelled or answered request was dispatched"
        self.seen.append(batch)
        self.inbox.append(batch)
        if len(self.inbox) == 1:
            self._start()

    def stop(self) -> None:
        self.stopped = True

    def _start(self) -> None:
        asyncio.get_running_loop().call_later(next(self.delays), self._finish)

    def _finish(self) -> None:
        batch = self.inbox.pop(0)
        result: list[Output] | BatchFailure
        if self.fail_every and len(self.seen) % self.fail_every == 0:
            result = BatchFailure(503, "Prediction failed")
        else:
            result = [Output(body=r.request_id.encode()) for r in batch]
        self.batcher.complete(self, batch, result)
        if self.inbox:
            self._start()


@dataclass(frozen=True)
class Scenario:
    """One run: the batcher's settings, arrivals, cancellations and executor run times."""

    batch_size: int
    delay_ms: int
    executors: int
    adaptive: bool
    fail_every: int  # every n-th batch of an executor fails as a whole (0: never)
    gaps: list[float]  # seconds between arrivals
    cancel: list[bool]  # per request: does its client go away?
    cancel_after: list[float]  # ... this long after it arrived
    run_times: list[float]  # seconds per batch, cycled


ms = st.floats(min_value=0.0, max_value=0.004)
scenarios = st.builds(
    Scenario,
    batch_size=st.integers(min_value=1, max_value=8),
    delay_ms=st.integers(min_value=0, max_value=5),
    executors=st.integers(min_value=1, max_value=3),
    adaptive=st.booleans(),
    fail_every=st.sampled_from([0, 0, 3]),
    gaps=st.lists(ms, min_size=1, max_size=40),
    cancel=st.lists(st.booleans(), min_size=40, max_size=40),
    cancel_after=st.lists(ms, min_size=40, max_size=40),
    run_times=st.lists(ms, min_size=1, max_size=8),
)


async def _play(s: Scenario) -> None:
    loop = asyncio.get_running_loop()
    batcher = Batcher(
        model="m",
        version="1",
        batch_size=s.batch_size,
        max_batch_delay_ms=s.delay_ms,
        queue_size=1000,
        response_timeout=60.0,
        on_stuck=lambda runner: None,
        adaptive=s.adaptive,
    )
    seen: list[list[InferenceRequest]] = []
    runners = [
        StandIn(f"r{i}", batcher, itertools.cycle(s.run_times), s.fail_every, seen)
        for i in range(s.executors)
    ]
    batcher.capacity = len(runners)
    for runner in runners:
        batcher.idle(runner)

    requests: list[InferenceRequest] = []
    cancelled: set[str] = set()
    for i, gap in enumerate(s.gaps):
        await asyncio.sleep(gap)
        request = InferenceRequest(f"req-{i}", (), (), loop)
        requests.append(request)
        batcher.submit(request)
        if s.cancel[i]:

            def cancel(r: InferenceRequest = request) -> None:
                if r.future.cancel():  # False once answered: then it counts as answered
                    cancelled.add(r.request_id)

            loop.call_later(s.cancel_after[i], cancel)

    answers = await asyncio.wait_for(
        asyncio.gather(*(r.future for r in requests), return_exceptions=True), 5
    )
    for request, answer in zip(requests, answers, strict=True):
        if request.request_id in cancelled:
            assert isinstance(answer, asyncio.CancelledError)
        elif isinstance(answer, ServeError):
            assert answer.status == 503
            assert answer.message == "Prediction failed"
        else:
            assert isinstance(answer, Output)
            assert answer.body == request.request_id.encode(), "an answer reached the wrong caller"

    dispatched = [r.request_id for batch in seen for r in batch]
    assert len(dispatched) == len(set(dispatched)), "a request ran twice"
    answered = {r.request_id for r in requests} - cancelled
    assert answered <= set(dispatched), "a request was answered without running"

    await batcher.close(timeout=5.0)
    assert batcher.pending == 0
    assert batcher.in_flight == 0
    assert all(runner.stopped for runner in runners)


@settings(max_examples=100, deadline=None)
@given(scenarios)
def test_every_request_is_answered_once_with_its_own_result(s: Scenario) -> None:
    asyncio.run(_play(s))
