"""The intra-op thread rule, as plain arithmetic."""

from __future__ import annotations

from serve.workers.intraop import LONG_BATCH, SHORT_BATCH, ExecutorThreads, ThreadBudget


def test_the_budget_is_shared_between_executors() -> None:
    budget = ThreadBudget(cores=8)
    budget.add()
    assert budget.per_executor == 8
    budget.add()
    budget.add()
    assert budget.per_executor == 2  # 8 cores // 3 executors
    budget.remove()
    assert budget.per_executor == 4
    assert ThreadBudget(configured=3, cores=8).per_executor == 3


def test_short_batches_use_one_thread_and_long_ones_the_share() -> None:
    budget = ThreadBudget(cores=4)
    budget.add()
    threads = ExecutorThreads(budget, weight=1.0)
    assert threads.current() == 4
    threads.observe(SHORT_BATCH / 2)
    assert threads.current() == 1
    threads.observe((SHORT_BATCH + LONG_BATCH) / 2)  # in between: no flapping
    assert threads.current() == 1
    threads.observe(LONG_BATCH * 2)
    assert threads.current() == 4
    threads.observe((SHORT_BATCH + LONG_BATCH) / 2)
    assert threads.current() == 4


def test_a_configured_count_is_never_changed() -> None:
    budget = ThreadBudget(configured=2, cores=4)
    threads = ExecutorThreads(budget, weight=1.0)
    threads.observe(SHORT_BATCH / 10)
    assert threads.current() == 2


def test_a_step_schedulers_executor_leaves_one_core_free() -> None:
    for cores, executors, expected in ((2, 1, 1), (16, 1, 15), (16, 4, 4), (1, 1, 1)):
        budget = ThreadBudget(cores=cores)
        for _ in range(executors):
            budget.add()
        threads = ExecutorThreads(budget, weight=1.0, steps=True)
        threads.observe(LONG_BATCH * 10)
        assert threads.current() == expected, (cores, executors)
    configured = ThreadBudget(configured=2, cores=2)
    assert ExecutorThreads(configured, steps=True).current() == 2
