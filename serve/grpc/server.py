"""Builds, starts and stops the two grpclib servers (inference and management).

Each server refuses messages over `max_request_size`, maps errors once (serve.grpc.errors)
and counts the RPCs in flight. Stopping refuses new RPCs (UNAVAILABLE), lets the running ones
finish within the grace period, then closes the connections; the registry drains after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any, Protocol

from grpclib.const import Handler, Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from serve.config import Address, Config, ConfigError
from serve.grpc.errors import guarded
from serve.grpc.inference import InferenceService
from serve.grpc.management import ManagementService
from serve.grpc.oip import OipService
from serve.models.registry import Registry

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
    """The RPCs of one server: every handler guarded, counted, and refused once closing."""

    def __init__(self) -> None:
        self.closing = False
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def wrap(self, mapping: Mapping[str, Handler]) -> dict[str, Handler]:
        """The same methods, each guarded (errors mapped) and gated."""
        return {
            path: handler._replace(func=self._gated(guarded(handler.func, path)))
            for path, handler in mapping.items()
        }

    def _gated(self, rpc: Any) -> Any:
        async def run(stream: Any) -> None:
            if self.closing:
                raise GRPCError(Status.UNAVAILABLE, "The server is shutting down")
            self._active += 1
            self._idle.clear()
            try:
                await rpc(stream)
            finally:
                self._active -= 1
                if not self._active:
                    self._idle.set()

        return run

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
    stack: AsyncExitStack, config: Config, registry: Registry, grace: float
) -> tuple[list[tuple[str, Address]], list[Gate]]:
    """Start both servers; `stack` stops them (drain both, then close).

    Returns the bound addresses and the gates (closing a gate refuses new RPCs at once).
    """
    # the inference address serves TorchServe's service and KServe's OIP service side by side
    services: list[tuple[str, Address, list[Servable]]] = [
        (
            "gRPC Inference API",
            config.grpc_inference_address,
            [InferenceService(registry), OipService(registry)],
        ),
        (
            "gRPC Management API",
            config.grpc_management_address,
            [ManagementService(config, registry)],
        ),
    ]
    started: list[tuple[Gate, Server]] = []
    stack.push_async_callback(_stop, started, grace)
    bound: list[tuple[str, Address]] = []
    for label, address, servables in services:
        gate = Gate()
        gated = [_Gated(service, gate) for service in servables]
        server = Server(gated, codec=LimitedCodec(config.max_request_size))
        sock = _bind(address)
        await server.start(sock=sock)
        started.append((gate, server))
        bound.append((label, Address(address.host, sock.getsockname()[1])))
    return bound, [gate for gate, _ in started]


def _bind(address: Address) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        return socket.create_server((address.host, address.port), family=family)
    except OSError as exc:
        raise ConfigError(str(address), f"cannot bind: {exc.strerror}") from exc


async def _stop(started: list[tuple[Gate, Server]], grace: float) -> None:
    await asyncio.gather(*(gate.drain(grace) for gate, _ in started))
    for _, server in started:
        server.close()
    await asyncio.gather(*(server.wait_closed() for _, server in started))
