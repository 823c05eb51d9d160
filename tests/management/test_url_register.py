"""Registering archives from URLs: allowed_urls, downloads into the store, file:// copies.

The origin is an aiohttp server on a free loopback port, run in a thread by the test; it
serves zip archives built here, oversized bodies, a 404, redirects and a body that stalls
until the test lets it go.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from serve.grpc.gen.org.pytorch.serve.grpc import management as pbm
from tests.helpers.clients import http, run
from tests.helpers.server import (
    HandlerSpec,
    Server,
    ServerFactory,
    finish,
    free_port,
    run_serve,
    server_config,
)

HANDLER = """
def handle(data, context):
    if data is None:
        return None
    return [f"hello from {context.model_name}" for _ in data]
"""
LIMIT = 64 * 1024  # max_download_size of the narrow server
WAIT = 1.0  # its download_timeout


def build_archive(name: str, model_config: dict[str, Any] | None = None) -> bytes:
    """A .mar (zip) with a manifest and a handler, as the archiver writes one."""
    model: dict[str, Any] = {"modelName": name, "modelVersion": "1.0", "handler": "handler.py"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("handler.py", HANDLER)
        if model_config is not None:
            archive.writestr("model-config.yaml", json.dumps(model_config))  # YAML reads JSON
            model["configFile"] = "model-config.yaml"
        manifest = {"runtime": "python", "model": model, "archiverVersion": "0.12.0"}
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
    return buffer.getvalue()


class Origin:
    """The HTTP server archives are downloaded from, on its own loop in a thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.files = {
            "good.mar": build_archive("good"),
            "taken.mar": build_archive("taken"),
            "target.mar": build_archive("target"),
        }
        self.loop = asyncio.new_event_loop()
        self.release = asyncio.Event()
        self.stalled = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> Origin:
        self._thread.start()
        assert self._started.wait(30), "the origin server did not start"
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.release.set)  # let a stalled download go
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/models/{name}", self._file)
        app.router.add_get("/big/{name}", self._big)
        app.router.add_get("/chunked/{name}", self._chunked)
        app.router.add_get("/stall/{name}", self._stall)
        app.router.add_get("/redirect/{name}", self._redirect_out)
        app.router.add_get("/hop/{name}", self._redirect_in)
        app.router.add_get("/forbidden/{name}", self._file)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())
        self.loop.close()

    async def _file(self, request: web.Request) -> web.Response:
        body = self.files.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/octet-stream")

    async def _big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"\0" * (LIMIT * 4))

    async def _chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()  # no Content-Length: the cap counts the bytes
        await response.prepare(request)
        for _ in range(16):
            await response.write(b"\0" * (LIMIT // 2))
        await response.write_eof()
        return response

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(LIMIT)})
        await response.prepare(request)
        await response.write(b"PK")
        self.stalled.set()
        await self.release.wait()
        return response

    async def _redirect_out(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/forbidden/{request.match_info['name']}")

    async def _redirect_in(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/models/{request.match_info['name']}")


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with Origin() as origin:
        yield origin


@pytest.fixture(scope="module")
def server(
    make_module_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory, origin: Origin
) -> Server:
    """Model API on; only the origin's allowed folders and one local folder are allowed."""
    root = tmp_path_factory.mktemp("urls")
    (root / "store").mkdir()
    (root / "allowed").mkdir()
    (root / "other").mkdir()
    base = origin.base.replace(".", r"\.")
    allowed = [
        rf"{base}/(models|big|chunked|stall|redirect|hop)/.*",
        rf"file://{root}/allowed/.*",
    ]
    return make_module_server(
        root=root,
        enable_model_api=True,
        allowed_urls=allowed,
        max_download_size=LIMIT,
        download_timeout=WAIT,
    )


def store_of(server: Server) -> Path:
    return server.store


def register(server: Server, url: str, extra: str = "") -> tuple[int, dict[str, Any]]:
    status, body = http(
        "POST",
        f"{server.management}/models?url={quote(url, safe='')}&initial_workers=1"
        f"&synchronous=true{extra}",
    )
    return status, json.loads(body)


def assert_store_clean(server: Server, expected: set[str]) -> None:
    """Exactly `expected` in the store: no partial or temporary file was left behind."""
    names = {p.name for p in store_of(server).iterdir()}
    assert names == expected, names


def test_a_download_registers_and_the_model_answers(server: Server, origin: Origin) -> None:
    url = f"{origin.base}/models/good.mar"
    status, body = register(server, url)
    assert status == 200, body
    saved = store_of(server) / "good.mar"
    assert saved.read_bytes() == origin.files["good.mar"]
    status, answer = http("POST", f"{server.inference}/predictions/good", b"x")
    assert (status, answer) == (200, b"hello from good")
    status, described = http("GET", f"{server.management}/models/good")
    assert json.loads(described)[0]["modelUrl"] == url
    listed = json.loads(http("GET", f"{server.management}/models")[1])["models"]
    assert {"modelName": "good", "modelUrl": url} in listed
    # unregistering deletes the archive it downloaded, as TorchServe does
    assert http("DELETE", f"{server.management}/models/good")[0] == 200
    assert_store_clean(server, set())


def test_a_redirect_that_stays_within_allowed_urls_is_followed(
    server: Server, origin: Origin
) -> None:
    status, body = register(server, f"{origin.base}/hop/target.mar")
    assert status == 200, body
    assert (store_of(server) / "target.mar").read_bytes() == origin.files["target.mar"]
    assert http("DELETE", f"{server.management}/models/target")[0] == 200
    assert_store_clean(server, set())


def test_a_url_outside_allowed_urls_is_refused(server: Server, origin: Origin) -> None:
    url = f"{origin.base}/forbidden/good.mar"
    status, body = register(server, url)
    assert status == 400, body
    assert url in body["message"]
    assert "allowed_urls" in body["message"]
    # the match is on the whole URL: an allowed prefix inside another URL does not pass
    sneaky = f"http://example.invalid/?{origin.base}/models/good.mar"
    assert register(server, sneaky)[0] == 400
    assert_store_clean(server, set())


def test_dot_segments_cannot_leave_an_allowed_folder(server: Server, origin: Origin) -> None:
    root = store_of(server).parent
    (root / "other" / "escape.mar").write_bytes(build_archive("escape"))
    for url in (
        f"{origin.base}/models/../forbidden/good.mar",
        f"{origin.base}/models/%2e%2e/forbidden/good.mar",
        f"file://{root}/allowed/../other/escape.mar",
    ):
        status, body = register(server, url)
        assert status == 400, (url, body)
        assert "'..'" in body["message"]
    assert_store_clean(server, set())


def test_a_redirect_to_a_url_outside_allowed_urls_is_refused(
    server: Server, origin: Origin
) -> None:
    status, body = register(server, f"{origin.base}/redirect/good.mar")
    assert status == 400, body
    assert "redirect" in body["message"]
    assert "/forbidden/good.mar" in body["message"]
    assert_store_clean(server, set())


@pytest.mark.parametrize("path", ["big/big.mar", "chunked/huge.mar"])
def test_an_archive_over_max_download_size_is_refused(
    server: Server, origin: Origin, path: str
) -> None:
    status, body = register(server, f"{origin.base}/{path}")
    assert status == 413, body
    assert "max_download_size" in body["message"]
    assert_store_clean(server, set())


def test_a_stalled_download_times_out(server: Server, origin: Origin) -> None:
    started = time.monotonic()
    status, body = register(server, f"{origin.base}/stall/slow.mar")
    assert origin.stalled.is_set(), "the origin never sent the headers"
    assert status == 400, body
    assert "download_timeout" in body["message"]
    assert time.monotonic() - started >= WAIT
    assert_store_clean(server, set())


def test_an_archive_name_already_in_the_store_is_a_409_and_is_left_alone(
    server: Server, origin: Origin
) -> None:
    existing = store_of(server) / "taken.mar"
    existing.write_bytes(b"the operator's own archive")
    try:
        status, body = register(server, f"{origin.base}/models/taken.mar")
        assert status == 409, body
        assert "taken.mar" in body["message"]
        assert existing.read_bytes() == b"the operator's own archive"
        assert_store_clean(server, {"taken.mar"})
    finally:
        existing.unlink()


def test_an_error_status_from_the_origin_is_a_400_naming_it(server: Server, origin: Origin) -> None:
    status, body = register(server, f"{origin.base}/models/missing.mar")
    assert status == 400, body
    assert body["type"] == "DownloadArchiveException"
    assert "404" in body["message"]
    assert_store_clean(server, set())


@pytest.mark.parametrize(
    "path",
    ["models/", "models/notes.txt", "models/..%2Fescape.mar", "models/%2E%2E.mar", "models/.x.mar"],
)
def test_a_url_without_a_usable_archive_name_is_refused(
    server: Server, origin: Origin, path: str
) -> None:
    status, body = register(server, f"{origin.base}/{path}")
    assert status == 400, body
    assert_store_clean(server, set())


def test_other_url_schemes_are_refused(server: Server) -> None:
    status, body = register(server, "s3://bucket/good.mar")
    assert status == 400, body
    assert "s3://" in body["message"]


def test_grpc_register_model_takes_urls_through_the_same_path(
    server: Server, origin: Origin
) -> None:
    async def call(url: str) -> str:
        host, port = server.grpc_management.rsplit(":", 1)
        async with Channel(host, int(port)) as channel:
            stub = pbm.ManagementApIsServiceStub(channel)
            request = pbm.RegisterModelRequest(url=url, initial_workers=1, synchronous=True)
            return (await stub.register_model(request)).msg

    assert "registered with 1 initial workers" in run(call(f"{origin.base}/models/good.mar"))
    with pytest.raises(GRPCError) as refused:
        run(call(f"{origin.base}/forbidden/good.mar"))
    assert refused.value.status == Status.INVALID_ARGUMENT
    assert "allowed_urls" in str(refused.value.message)
    assert http("DELETE", f"{server.management}/models/good")[0] == 200
    assert_store_clean(server, set())


def test_a_file_url_is_copied_into_the_store(server: Server) -> None:
    root = store_of(server).parent
    source = root / "allowed" / "local.mar"
    source.write_bytes(build_archive("local"))
    url = f"file://{source}"
    status, body = register(server, url)
    assert status == 200, body
    assert (store_of(server) / "local.mar").read_bytes() == source.read_bytes()
    status, answer = http("POST", f"{server.inference}/predictions/local", b"x")
    assert (status, answer) == (200, b"hello from local")
    assert json.loads(http("GET", f"{server.management}/models/local")[1])[0]["modelUrl"] == url
    assert http("DELETE", f"{server.management}/models/local")[0] == 200
    assert source.exists(), "unregistering removes the copy, never the source"
    assert_store_clean(server, set())


def test_a_file_url_outside_allowed_urls_is_refused(server: Server) -> None:
    source = store_of(server).parent / "other" / "elsewhere.mar"
    source.write_bytes(build_archive("elsewhere"))
    status, body = register(server, f"file://{source}")
    assert status == 400, body
    assert "allowed_urls" in body["message"]
    assert_store_clean(server, set())


def test_a_failed_registration_removes_its_download(server: Server, origin: Origin) -> None:
    # the archive downloads fine but registering it fails (its version is already there)
    assert register(server, f"{origin.base}/models/good.mar")[0] == 200
    (store_of(server) / "good.mar").rename(store_of(server) / "kept.mar")
    try:
        origin.files["again.mar"] = origin.files["good.mar"]  # same model name and version
        status, body = register(server, f"{origin.base}/models/again.mar", "&model_name=good")
        assert status == 409, body
        assert_store_clean(server, {"kept.mar"})
    finally:
        assert http("DELETE", f"{server.management}/models/good")[0] == 200
        (store_of(server) / "kept.mar").unlink()


def test_default_allowed_urls_warn_and_archive_workers_win(make_server: ServerFactory) -> None:
    """TorchServe's permissive default is logged; model-config minWorkers beats the request."""
    pair = HandlerSpec(HANDLER, model_config={"minWorkers": 2, "maxWorkers": 2})
    server = make_server({"pair": pair}, load=[], enable_model_api=True)
    assert "allowed_urls is the permissive default" in server.log()
    status, body = register(server, "pair")
    assert status == 200, body
    assert "registered with 2 initial workers" in body["status"]
    described = json.loads(http("GET", f"{server.management}/models/pair")[1])[0]
    assert (described["minWorkers"], described["maxWorkers"]) == (2, 2)
    assert len(described["workers"]) == 2


@pytest.mark.parametrize(
    ("config", "key", "fragment"),
    [
        ({"allowed_urls": ["https://ok/.*", "("]}, "allowed_urls", "not a valid regular expr"),
        ({"max_download_size": 0}, "max_download_size", "must be at least 1"),
        ({"download_timeout": 0}, "download_timeout", "must be greater than 0"),
        ({"download_timeout": "1m"}, "download_timeout", "expected a number of seconds"),
    ],
)
def test_bad_download_settings_name_their_key_and_exit_2(
    tmp_path: Path, config: dict[str, object], key: str, fragment: str
) -> None:
    (tmp_path / "serve.yaml").write_text(json.dumps(config))
    result = run_serve("--config", str(tmp_path / "serve.yaml"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert key in result.stderr
    assert fragment in result.stderr


def test_a_downloaded_archive_is_restored_from_the_store_after_a_restart(
    tmp_path: Path, origin: Origin
) -> None:
    """The snapshot names the saved file, so a restart loads it without downloading again."""
    store = tmp_path / "store"
    store.mkdir()
    allowed = [origin.base.replace(".", r"\.") + "/models/.*"]
    config = server_config(store, enable_model_api=True, allowed_urls=allowed)
    server = Server(tmp_path, config)
    server.start()
    try:
        assert register(server, f"{origin.base}/models/good.mar")[0] == 200
    finally:
        finish(server)
    config["allowed_urls"] = ["https://nowhere\\.invalid/.*"]  # no download can happen now
    restarted = Server(tmp_path, config)
    restarted.start()
    try:
        restarted.wait_ready()
        status, answer = http("POST", f"{restarted.inference}/predictions/good", b"x")
        assert (status, answer) == (200, b"hello from good")
        assert (store / "good.mar").read_bytes() == origin.files["good.mar"]
    finally:
        finish(restarted)
