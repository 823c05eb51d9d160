"""Sequence batching's settings and its batching decision, kept apart from waiting.

A sequence (TorchServe's stateful inference) is a chain of requests sharing one id: each runs
on the executor holding its state, one at a time, in order. A batch takes at most one request
per sequence. In the continuous variant, requests whose handler said "more to come" stay in
their executor's batch for the next iteration, and one new request per sequence may join
beside them (so a cancel can reach a sequence that is still streaming).
"""

from __future__ import annotations

from dataclasses import dataclass

from serve.batching.policy import Take, Wait


@dataclass(frozen=True, slots=True)
class SequenceSettings:
    """model-config.yaml's sequence keys, in seconds where TorchServe's are milliseconds."""

    max_idle: float  # sequenceMaxIdleMSec: the longest wait for a sequence's next request
    timeout: float | None  # sequenceTimeoutMSec: a sequence's whole life; None: no limit
    max_sequences: int  # maxNumSequence: live sequences of the model version
    queue_size: int  # maxSequenceJobQueueSize: requests queued per sequence
    continuous: bool  # continuousBatching too: TorchServe's SequenceContinuousBatching


def admit_quota(batch_size: int, continuing: int, *, continuous: bool) -> int:
    """How many new requests (one per sequence) a batch may take beside `continuing` ones.

    Plain: batch_size. Continuous: at most batch_size new, and TorchServe's cap of
    2 * batch_size requests in all, so a sequence's next request (a cancel) can join one that
    is still streaming even with batch_size 1.
    """
    if not continuous:
        return batch_size
    return max(0, min(batch_size, 2 * batch_size - continuing))


def decide_sequences(
    *,
    ready: int,
    could_join: int,
    continuing: int,
    oldest_age: float,
    quota: int,
    max_delay: float,
) -> Take | Wait:
    """Take n new requests now, or wait, for an idle executor.

    ready: sequences with a request queued that this executor may run (its own, or new ones).
    could_join: its sequences with nothing queued nor running (their next request may come).
    continuing: requests staying from the last iteration (continuous): they never wait.
    oldest_age: how long the oldest ready request has waited.
    """
    take = min(ready, quota)
    if not take or continuing or take == quota or not could_join:
        return Take(take)  # waiting cannot grow it, or must not hold streaming requests back
    remaining = max_delay - oldest_age
    if remaining <= 0:
        return Take(take)
    return Wait(remaining)
