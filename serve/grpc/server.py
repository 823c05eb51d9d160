"""Builds, starts and stops the two grpclib servers (inference and management).

Each server refuses messages over `max_request_size`, maps errors once (serve.grpc.errors),
checks the `authorization` metadata of every RPC but the public ones (serve.auth.public),
writes an access line per call, and counts the RPCs in flight. Stopping refuses new RPCs
(UNAVAILABLE), lets the running ones finish within the grace period, then closes the
connections; the registry drains after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any, Protocol

from grpclib.const import Handler, Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.server import Server

from serve.auth.keys import Kind, Tokens
from serve.auth.public import key_for_rpc
from serve.config import Address, Config
from serve.grpc.errors import guarded
from serve.grpc.inference import CALL_DEADLINE, InferenceService
from serve.grpc.management import ManagementService
from serve.grpc.oip import OipService
from serve.grpc.transport import CoalescingServer
from serve.models.registry import Registry
from serve.ports import bind_error
from serve.request import PRINTABLE_ID
from serve.telemetry.access_log import AccessLog

logger = logging.getLogger(__name__)


class Servable(Protocol):
    """A generated grpclib service."""

    def __mapping__(self) -> dict[str, Handler]: ...


class LimitedCodec(ProtoCodec):
    """The protobuf codec, refusing inbound messages over max_request_size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def decode(self, data: bytes, message_type: Any) -> Any:
        if len(data) > self.limit:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"Request message is larger than max_request_size ({self.limit} bytes); "
                "raise max_request_size in the server config to accept it",
            )
        try:
            return super().decode(data, message_type)
        except Exception as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"Malformed request message: {exc}") from exc


class Gate:
    """The RPCs of one server: every handler guarded, counted, and refused once closing.

    With `auth` (the keys and the key this server takes), every RPC but the public ones needs
    that key in its `authorization` metadata (`Bearer <key>`), so an RPC added later is covered
    by default. With `line`, each call writes an access line.
    """

    def __init__(
        self,
        auth: tuple[Tokens, Kind] | None = None,
        access: AccessLog | None = None,
    ) -> None:
        self.closing = False
        self._auth = auth
        self._access = access
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def wrap(self, mapping: Mapping[str, Handler]) -> dict[str, Handler]:
        """The same methods, each guarded (errors mapped) and gated."""
        return {
            path: handler._replace(func=self._gated(guarded(handler.func, path), path))
            for path, handler in mapping.items()
        }

    def _gated(self, rpc: Any, path: str) -> Any:
        kind = None if self._auth is None else key_for_rpc(path, self._auth[1])
        allows = None if self._auth is None or kind is None else self._auth[0].checker(kind)
        refusal = (
            "Token Authorization failed. Token either incorrect, expired, or not provided "
            f"correctly: this API takes the {kind} key from key_file.json as "
            "'authorization: Bearer <key>' metadata"
        )

        async def run(stream: Any) -> None:
            if self.closing:
                raise GRPCError(Status.UNAVAILABLE, "The server is shutting down")
            if allows is not None and not allows(stream.metadata.get("authorization")):
                raise GRPCError(Status.UNAUTHENTICATED, refusal)
            self._active += 1
            self._idle.clear()
            CALL_DEADLINE.set(stream.deadline)  # this RPC's task only: a context per task
            try:
                await rpc(stream)
            finally:
                self._active -= 1
                if not self._active:
                    self._idle.set()

        return run if self._access is None else self._logged(run, path, self._access)

    @staticmethod
    def _logged(run: Any, path: str, access: AccessLog) -> Any:
        async def logged(stream: Any) -> None:
            started = time.perf_counter()
            status = Status.OK
            try:
                await run(stream)
            except GRPCError as error:
                status = error.status
                raise
            except (StreamTerminatedError, asyncio.CancelledError):
                status = Status.CANCELLED
                raise
            except TimeoutError:
                status = Status.DEADLINE_EXCEEDED
                raise
            finally:
                peer = stream.peer.addr()
                request_id = stream.metadata.get("x-request-id") if stream.metadata else None
                if request_id is not None and not PRINTABLE_ID.match(request_id):
                    request_id = None  # what a client sends reaches the log only if plain
                access.emit(
                    access.line(
                        peer[0] if peer else None,
                        "GRPC",
                        path,
                        status.name,
                        None,
                        time.perf_counter() - started,
                        request_id,
                    )
                )

        return logged

    def close(self) -> None:
        """Refuse new RPCs from now on (UNAVAILABLE)."""
        self.closing = True

    async def drain(self, timeout: float) -> None:
        """Refuse new RPCs and wait (up to timeout) for the running ones."""
        self.closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)


class _Gated:
    """A service whose handlers go through a Gate (what grpclib's Server serves)."""

    def __init__(self, service: Servable, gate: Gate) -> None:
        self._mapping = gate.wrap(service.__mapping__())

    def __mapping__(self) -> dict[str, Handler]:
        return self._mapping


async def start_grpc(
    stack: AsyncExitStack,
    config: Config,
    registry: Registry,
    grace: float,
    tokens: Tokens | None = None,
    access: AccessLog | None = None,
) -> tuple[list[tuple[str, Address]], list[Gate]]:
    """Start both servers; `stack` stops them (drain both, then close).

    Returns the bound addresses and the gates (closing a gate refuses new RPCs at once).
    """
    services: list[tuple[str, str, list[Servable], Kind]] = [
        (
            "gRPC Inference API",
            "grpc_inference_address",
            [InferenceService(registry), OipService(registry)],
            "inference",
        ),
        (
            "gRPC Management API",
            "grpc_management_address",
            [ManagementService(config, registry)],
            "management",
        ),
    ]
    started: list[tuple[Gate, Server]] = []
    stack.push_async_callback(_stop, started, grace)
    bound: list[tuple[str, Address]] = []
    for label, key, servables, kind in services:
        address: Address = getattr(config, key)
        gate = Gate(None if tokens is None else (tokens, kind), access)
        gated = [_Gated(service, gate) for service in servables]
        server = CoalescingServer(gated, codec=LimitedCodec(config.max_request_size))
        sock = _bind(key, address)
        await server.start(sock=sock)
        started.append((gate, server))
        bound.append((label, Address(address.host, sock.getsockname()[1])))
    return bound, [gate for gate, _ in started]


def _bind(key: str, address: Address) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        return socket.create_server((address.host, address.port), family=family)
    except OSError as exc:
        raise bind_error(key, address, exc) from exc


async def _stop(started: list[tuple[Gate, Server]], grace: float) -> None:
    await asyncio.gather(*(gate.drain(grace) for gate, _ in started))
    for _, server in started:
        server.close()
    await asyncio.gather(*(server.wait_closed() for _, server in started))
