"""The OpenAI door and the step scheduler, end to end: the tiny byte-level decoder archived by
our archiver, served by the real server (token auth on, as by default), called with the
official `openai` client and the inference key as its `api_key`."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Iterator
from typing import TypedDict

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import metric_samples, poll
from tests.helpers.generation import tiny_archive
from tests.support import Server, http, server_config

MODEL = "tiny"
PROMPT = "The if statement"


@pytest.fixture(scope="module")
def gen_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("openai")
    store = root / "store"
    store.mkdir()
    tiny_archive(root, store, MODEL, "batchSize: 8\nminWorkers: 1\nmaxWorkers: 1\n", steps=40)
    config = server_config(store, load_models=[f"{MODEL}.mar"], disable_token_authorization=False)
    server = Server(root, config)
    server.start()
    server.wait_ready()
    yield server
    assert server.stop() == 0, server.log()


def _key(server: Server, kind: str = "inference") -> str:
    """A key as a user reads it from key_file.json."""
    return str(json.loads((server.root / "key_file.json").read_text())[kind]["key"])


def _bearer(server: Server, kind: str = "inference") -> dict[str, str]:
    return {"Authorization": f"Bearer {_key(server, kind)}"}


@pytest.fixture
def client(gen_server: Server) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gen_server.inference + "/v1", api_key=_key(gen_server), max_retries=0
    )


class _Sampling(TypedDict):
    temperature: float


def _greedy() -> _Sampling:
    """Greedy sampling, as keyword arguments the client's typed `create` accepts."""
    return {"temperature": 0}


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL, f"{MODEL}/1.0"]
    assert client.models.retrieve(f"{MODEL}/1.0").id == f"{MODEL}/1.0"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(f"{MODEL}/9.9")


def test_stream_equals_whole_and_usage_is_exact(client: openai.OpenAI) -> None:
    whole = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=24, extra_body={"ignore_eos": True}, **_greedy()
    )
    choice = whole.choices[0]
    assert choice.finish_reason == "length"
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == len(PROMPT.encode())  # one byte, one token
    assert whole.usage.completion_tokens == 24
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
            **_greedy(),
        )
    )
    assert len({c.id for c in chunks}) == 1
    assert len({c.created for c in chunks}) == 1
    assert "".join(c.choices[0].text for c in chunks if c.choices) == choice.text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert [f for f in finishes if f] == ["length"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage == whole.usage


def test_chat_stream_shape_n_and_role(client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Tell me about loops"}
    ]
    whole = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_completion_tokens=12,
        n=3,
        **_greedy(),
    )
    assert [c.index for c in whole.choices] == [0, 1, 2]
    texts = {c.message.content for c in whole.choices}
    assert len(texts) == 1  # greedy: every choice alike
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_completion_tokens=12,
        n=3,
        stream=True,
        **_greedy(),
    )
    by_choice: dict[int, list[openai.types.chat.ChatCompletionChunk]] = {}
    for chunk in stream:
        for c in chunk.choices:
            by_choice.setdefault(c.index, []).append(chunk)
    assert sorted(by_choice) == [0, 1, 2]
    for index, chunks in by_choice.items():
        deltas = [next(c for c in ch.choices if c.index == index) for ch in chunks]
        assert deltas[0].delta.role == "assistant"
        assert all(d.delta.role is None for d in deltas[1:])
        assert len([d for d in deltas if d.finish_reason]) == 1
        assert "".join(d.delta.content or "" for d in deltas) in texts


def test_stop_string_ends_the_text(client: openai.OpenAI) -> None:
    free = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=30, extra_body={"ignore_eos": True}, **_greedy()
    ).choices[0]
    stop = free.text[6:8]
    assert stop
    cut = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=30, stop=[stop], **_greedy()
    ).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.index(stop)]


def test_bad_requests_are_openai_400s(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model=MODEL, prompt="x" * 600, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="n must be"):
        client.completions.create(model=MODEL, prompt="x", n=0)
    with pytest.raises(openai.BadRequestError, match=r"n must be within \[1, 16\], got 17"):
        client.completions.create(model=MODEL, prompt="x", n=17)
    with pytest.raises(openai.BadRequestError, match="n: at most 16 choices per call"):
        client.completions.create(model=MODEL, prompt=["a", "b", "c", "d", "e"], n=4)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")
    # unknown fields are accepted
    ok = client.completions.create(
        model=MODEL, prompt="x", max_tokens=2, extra_body={"frobnicate": 1}, **_greedy()
    )
    assert ok.choices[0].text is not None


# httpx's async pool may leave a socket for the collector once asyncio.run closed its loop:
# collected (and its warning ignored) inside the test that made it, a client-side artefact
CLIENT_SOCKETS = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@CLIENT_SOCKETS
def test_async_client_streams(gen_server: Server) -> None:
    async def main() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=gen_server.inference + "/v1", api_key=_key(gen_server))
        whole = await client.completions.create(
            model=MODEL, prompt="def", max_tokens=10, **_greedy()
        )
        parts: list[str] = []
        async for chunk in await client.completions.create(
            model=MODEL, prompt="def", max_tokens=10, stream=True, **_greedy()
        ):
            parts.extend(c.text for c in chunk.choices)
        return whole.choices[0].text, "".join(parts)

    whole, streamed = asyncio.run(main())
    gc.collect()
    assert whole == streamed


def test_a_late_request_gets_its_first_token_before_the_running_ones_finish(
    client: openai.OpenAI,
) -> None:
    long = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=300, stream=True,
        extra_body={"ignore_eos": True}, **_greedy(),
    )  # fmt: skip
    for seen, _chunk in enumerate(long, 1):
        if seen == 5:  # the long one is generating: now a short one arrives
            short = client.completions.create(
                model=MODEL, prompt="x", max_tokens=3, extra_body={"ignore_eos": True}, **_greedy()
            )
            assert short.usage is not None
            assert short.usage.completion_tokens == 3
            break
    rest = sum(1 for _ in long)
    assert rest > 100  # the long one was far from its end when the short one finished


@CLIENT_SOCKETS
def test_cancelled_requests_free_their_slots(gen_server: Server) -> None:
    """vLLM's cancellation test, scaled down: long requests with a short client timeout, then
    a short request finishes within seconds and the running gauge returns to 0."""

    async def main() -> float:
        async with openai.AsyncOpenAI(
            base_url=gen_server.inference + "/v1",
            api_key=_key(gen_server),
            timeout=0.5,
            max_retries=0,
        ) as impatient:
            long = [
                impatient.completions.create(
                    model=MODEL, prompt=PROMPT, max_tokens=480, extra_body={"ignore_eos": True}
                )
                for _ in range(12)  # more than batch_size: some are cancelled while queued
            ]
            results = await asyncio.gather(*long, return_exceptions=True)
        assert all(isinstance(r, openai.APITimeoutError) for r in results)
        async with openai.AsyncOpenAI(
            base_url=gen_server.inference + "/v1", api_key=_key(gen_server)
        ) as client:
            started = time.monotonic()
            short = await client.completions.create(
                model=MODEL, prompt="x", max_tokens=4, **_greedy()
            )
        assert short.choices[0].finish_reason in ("length", "stop")
        return time.monotonic() - started

    assert asyncio.run(main()) < 5.0
    gc.collect()

    def idle() -> bool:
        running = metric_samples(gen_server, "serve_num_requests_running")
        return sum(running.values()) == 0

    asyncio.run(poll(idle, timeout=10))


def test_token_metrics_are_exported(client: openai.OpenAI, gen_server: Server) -> None:
    client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, **_greedy())
    labels = (("model_name", MODEL), ("model_version", "1.0"))
    for name in (
        "serve_time_to_first_token_seconds_count",
        "serve_inter_token_latency_seconds_count",
        "serve_e2e_request_latency_seconds_count",
        "serve_request_queue_time_seconds_count",
        "serve_prompt_tokens_total",
        "serve_generation_tokens_total",
    ):
        assert metric_samples(gen_server, name).get(labels, 0) > 0, name
    assert labels in metric_samples(gen_server, "serve_num_requests_waiting")


def test_predictions_streams_json_chunks_and_describe_says_continuous(gen_server: Server) -> None:
    status, body = http(
        "POST",
        gen_server.inference + f"/predictions/{MODEL}",
        b'{"prompt": "abc", "max_tokens": 3, "temperature": 0, "ignore_eos": true}',
        headers={"Content-Type": "application/json", **_bearer(gen_server)},
    )
    assert status == 200
    assert body.count(b'"text"') == 3
    assert b'"finish_reason": "length"' in body
    status, body = http(
        "GET", gen_server.management + f"/models/{MODEL}", headers=_bearer(gen_server, "management")
    )
    assert status == 200
    assert b'"continuousBatching": true' in body
    status, body = http(
        "GET",
        gen_server.management + f"/models/{MODEL}?customized=true",
        headers=_bearer(gen_server, "management"),
    )
    assert status == 200, body
    assert json.loads(body)[0]["customizedMetadata"] is None


@pytest.mark.parametrize("key", [None, "AAAAAAAA"])
def test_a_missing_or_wrong_key_is_openais_401(gen_server: Server, key: str | None) -> None:
    if key is not None:  # the client refuses to send no key at all
        wrong = openai.OpenAI(base_url=gen_server.inference + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            wrong.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2)
        assert caught.value.code == "invalid_api_key"
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    for path in ("/v1/completions", "/v1/chat/completions"):
        status, body = http("POST", gen_server.inference + path, b"{}", headers=headers)
        assert status == 401, body
        error = json.loads(body)["error"]
        assert error["type"] == "authentication_error"
        assert error["code"] == "invalid_api_key"
        assert "inference key" in error["message"]


def test_the_bearer_inference_key_opens_chat(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2, **_greedy()
    )
    assert reply.usage is not None
    assert reply.usage.completion_tokens <= 2
