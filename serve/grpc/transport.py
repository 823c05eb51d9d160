"""grpclib's server with its socket writes coalesced: one send per loop turn per connection.

grpclib writes every HTTP/2 frame group as soon as h2 makes it: a unary call's response
headers, its message and its trailers are three `transport.write` calls (three `send`
syscalls under uvloop, each with the GIL held), and acknowledging the request's data is a
fourth. When a batch of answers is delivered, all of its calls write in the same loop turn, so
buffering the writes until the end of that turn sends them all at once: one syscall for the
batch instead of four per call. Order is kept (one buffer per connection, flushed in order),
and nothing waits longer than the current loop turn.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpclib.metadata import encode_metadata
from grpclib.protocol import H2Protocol
from grpclib.server import Server


class CoalescingTransport:
    """A transport whose writes are gathered and sent together at the end of the loop turn."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Queue `data`; the first write of a turn schedules the flush."""
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        """Send what is queued, in one write."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if self._transport.is_closing():
            return
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        """Send what is queued, then close (a GOAWAY or reset written just before is kept)."""
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        """Whether the underlying transport is closing."""
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The underlying transport's (peer name, socket)."""
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _CoalescingProtocol(H2Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        wrapped = CoalescingTransport(transport, loop)  # type: ignore[arg-type]
        super().connection_made(wrapped)  # type: ignore[arg-type]


class CoalescingServer(Server):
    """grpclib's Server whose connections coalesce their writes (see the module doc)."""

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        return _CoalescingProtocol(protocol.handler, protocol.config, protocol.h2_config)


def prediction_bytes(prediction: bytes) -> bytes:
    """A `PredictionResponse` holding only `prediction` (field 1, bytes), serialized.

    The same bytes as the generated class makes (an empty prediction is an empty message),
    without building a message object per answer.
    """
    if not prediction:
        return b""
    size, length = bytearray(), len(prediction)
    while length > 0x7F:
        size.append((length & 0x7F) | 0x80)
        length >>= 7
    size.append(length)
    return b"\x0a" + bytes(size) + prediction


async def send_unary(stream: Any, reply: bytes, metadata: dict[str, str]) -> None:
    """Answer a unary call: headers, the serialized `reply`, and OK trailers with `metadata`.

    The three are made by h2 back to back and written once, instead of grpclib's three sends
    (each an await on the connection's write readiness, an event dispatch and a write). When
    the reply does not fit the peer's flow-control window or one frame, or the transport is
    paused, it goes grpclib's way. No grpclib event listeners are registered in this server,
    so skipping the dispatch of send events changes nothing.
    """
    h2_stream = stream._stream
    connection = h2_stream.connection
    h2 = h2_stream._h2_connection
    stream_id = h2_stream.id
    framed = b"\x00" + len(reply).to_bytes(4, "big") + reply
    if (
        stream._send_initial_metadata_done
        or not connection.write_ready.is_set()
        or stream_id not in h2.streams
        or len(framed) > min(h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size)
    ):
        await stream.send_message(stream._send_type.FromString(reply))
        await stream.send_trailing_metadata(metadata=metadata)
        return
    trailers = [("grpc-status", "0"), *encode_metadata(metadata)]
    h2.send_headers(stream_id, [(":status", "200"), ("content-type", stream._content_type)])
    h2.send_data(stream_id, framed)
    h2.send_headers(stream_id, trailers, end_stream=True)
    h2_stream._transport.write(h2.data_to_send())
    stream._send_initial_metadata_done = True
    stream._send_message_done = True
    stream._send_trailing_metadata_done = True
    connection.messages_sent += 1
