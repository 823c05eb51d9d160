"""The KV cache budget, end to end: the tiny decoder with `handler.kv_cache_mb` set so that one
sequence of 200 tokens fits and two do not. The second request waits (counted as waiting)
until the first finishes and gives its share back; one that could never fit is a 400; the
KV gauges show the reservation and return to 0."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from handlers.generation import tiny
from tests.conftest import metric_samples, poll
from tests.helpers.generation import tiny_archive
from tests.helpers.server import serving
from tests.support import Server, http

MODEL = "tiny"
PROMPT = "The if statement"
TOKENS = 200
BUDGET_MB = 0.2  # 209,715 bytes: one sequence of PROMPT + 200 tokens (110,592 bytes), not two
LABELS = (("model_name", MODEL), ("model_version", "1.0"))


def _bytes_per_token() -> int:
    c = tiny.TINY_CONFIG
    return c.n_layers * 2 * c.n_kv_heads * (c.dim // c.n_heads) * 4  # float32 keys and values


def _reserved_for(max_tokens: int) -> int:
    return (len(tiny.tiny_tokenizer().encode(PROMPT)) + max_tokens) * _bytes_per_token()


@pytest.fixture(scope="module")
def kv_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("kv")
    store = root / "store"
    store.mkdir()
    model_config = (
        f"batchSize: 4\nminWorkers: 1\nmaxWorkers: 1\nhandler:\n  kv_cache_mb: {BUDGET_MB}\n"
    )
    tiny_archive(root, store, MODEL, model_config, steps=10)
    with serving(root / "server", store=store, load=[f"{MODEL}.mar"]) as server:
        yield server


def _gauge(server: Server, name: str) -> float:
    return metric_samples(server, name).get(LABELS, -1.0)


@pytest.fixture
def client(kv_server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=kv_server.inference + "/v1", api_key="-", max_retries=0)


async def _stream(client: openai.AsyncOpenAI, times: list[float]) -> int:
    """One greedy stream of TOKENS tokens; appends each content chunk's arrival time."""
    stream = await client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=TOKENS, stream=True, temperature=0,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            times.append(time.monotonic())
    return len(times)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_request_past_the_budget_waits_for_the_running_one(
    kv_server: Server, client: openai.AsyncOpenAI
) -> None:
    async def main() -> tuple[list[float], list[float], float, float, float]:
        first: list[float] = []
        second: list[float] = []
        one = asyncio.ensure_future(_stream(client, first))
        await poll(lambda: bool(first))
        two = asyncio.ensure_future(_stream(client, second))
        await poll(lambda: _gauge(kv_server, "serve_num_requests_waiting") == 1)
        reserved = _gauge(kv_server, "serve_kv_cache_reserved_bytes")
        perc = _gauge(kv_server, "serve_kv_cache_usage_perc")
        budget = _gauge(kv_server, "serve_kv_cache_budget_bytes")
        await asyncio.gather(one, two)
        await client.close()
        return first, second, reserved, perc, budget

    first, second, reserved, perc, budget = asyncio.run(main())
    assert len(first) == len(second) == TOKENS
    # held back by the budget, not by batch_size (4): it starts once the first has finished
    assert second[0] > first[-1]
    assert reserved == _reserved_for(TOKENS)
    assert budget == int(BUDGET_MB * 2**20)
    assert perc == pytest.approx(reserved / budget)

    def freed() -> bool:
        return (
            _gauge(kv_server, "serve_kv_cache_reserved_bytes") == 0
            and _gauge(kv_server, "serve_kv_cache_bytes") == 0
            and _gauge(kv_server, "serve_num_requests_waiting") == 0
        )

    asyncio.run(poll(freed, timeout=10))


def test_a_request_that_can_never_fit_is_a_400(
    kv_server: Server, client: openai.AsyncOpenAI
) -> None:
    async def main() -> None:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=480)
        await client.close()
        assert "KV cache" in str(caught.value)
        assert "kv_cache_mb" in str(caught.value)

    asyncio.run(main())
    # the server keeps serving within the budget
    asyncio.run(_fits(client))


async def _fits(client: openai.AsyncOpenAI) -> None:
    async with openai.AsyncOpenAI(base_url=str(client.base_url), api_key="-") as fresh:
        answer = await fresh.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5)
    assert answer.usage is not None
    assert answer.usage.completion_tokens <= 5


def test_a_bad_budget_fails_the_load(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    tiny_archive(tmp_path, store, "bad", "minWorkers: 1\nhandler:\n  kv_cache_mb: -3\n", steps=1)
    with serving(
        tmp_path / "server", store=store, load=[], enable_model_api=True, expect_errors=True
    ) as server:
        status, body = http(
            "POST", server.management + "/models?url=bad.mar&initial_workers=1&synchronous=true"
        )
    assert status >= 400
    assert b"kv_cache_mb" in body, body
