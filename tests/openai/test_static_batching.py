"""`handler: text_generation` with `continuousBatching: false` (static batching: a batch runs to
its end in one call, each step's tokens sent as intermediate responses), over the OpenAI door:
concurrent streams of different lengths in one batch each get exactly their own tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest

from tests.helpers.generation import tiny_archive
from tests.helpers.server import Server, serving

MODEL = "tiny-static"
LENGTHS = (3, 9, 17)


@pytest.fixture(scope="module")
def static_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("static")
    store = root / "store"
    store.mkdir()
    model_config = (
        "batchSize: 4\nmaxBatchDelay: 300\nminWorkers: 1\nmaxWorkers: 1\n"
        "continuousBatching: false\n"
    )
    tiny_archive(root, store, MODEL, model_config, steps=10)
    with serving(root / "server", store=store, load=[f"{MODEL}.mar"]) as server:
        yield server


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_streams_sharing_a_static_batch_each_get_their_own_tokens(static_server: Server) -> None:
    async def one(client: openai.AsyncOpenAI, prompt: str, tokens: int) -> tuple[str, str, int]:
        stream = await client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=tokens, stream=True, temperature=0,
            extra_body={"ignore_eos": True}, stream_options={"include_usage": True},
        )  # fmt: skip
        text, usage, finish = [], 0, ""
        async for chunk in stream:
            for choice in chunk.choices:
                text.append(choice.text)
                finish = choice.finish_reason or finish
            if chunk.usage is not None:
                usage = chunk.usage.completion_tokens
        whole = await client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=tokens, temperature=0,
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        assert finish == "length"
        return "".join(text), whole.choices[0].text, usage

    async def main() -> list[tuple[str, str, int]]:
        async with openai.AsyncOpenAI(
            base_url=static_server.inference + "/v1", api_key="-", max_retries=0, timeout=60
        ) as client:
            return await asyncio.gather(*(one(client, f"def f{n}():", n) for n in LENGTHS))

    for (streamed, whole, usage), tokens in zip(asyncio.run(main()), LENGTHS, strict=True):
        assert usage == tokens
        assert streamed == whole
