"""The HTTP floor: a bare aiohttp server on uvloop that reads the body and answers a fixed one.

`python -m benchmarks.floor --port P`. It serves `/predictions/{model}` and `/ping`, so the
same load drives it and the model servers; whatever ours spends above it is framework cost.
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web

ANSWER = b"[\n  0.1,\n  0.2,\n  0.3,\n  0.4\n]"


async def predict(request: web.Request) -> web.Response:
    """Read the body, answer a fixed JSON list."""
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


async def ping(request: web.Request) -> web.Response:
    """Health, as the model servers answer it."""
    return web.json_response({"status": "Healthy"})


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = web.Application()
    app.add_routes([web.post("/predictions/{model}", predict), web.get("/ping", ping)])
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
