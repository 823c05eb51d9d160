"""What the gRPC doors share: the call being served (its deadline and request id), the
client metadata a handler sees, and the trailing metadata naming the version that answered.

The server's gate (serve.grpc.server) sets `CALL` at the start of every RPC, in that RPC's
own task; the doors read it when they make their Call and the access log prints its id.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from grpclib.metadata import Deadline as CallDeadline

from serve.request import request_id_for

MODEL_VERSION = "x-model-version"  # trailing metadata: the version that answered
# Our 504 fires this much before the client's deadline, so that it (not grpclib cancelling the
# handler at the deadline itself) ends the call: counted, and taken out of the queue at once.
DEADLINE_MARGIN = 0.01


@dataclass(frozen=True, slots=True)
class CallInfo:
    """One RPC as the gate saw it arrive."""

    deadline: CallDeadline | None
    request_id: str  # the client's x-request-id when usable, else a fresh one
    client_id: str | None  # the client's x-request-id as sent (None: none)
    headers: tuple[tuple[str, str], ...]  # the client's text metadata

    def timeout(self) -> float | None:
        """Seconds left of the call's deadline, less the margin (None: no deadline)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline.time_remaining() - DEADLINE_MARGIN)


CALL: ContextVar[CallInfo] = ContextVar("grpc_call")


def call_info(stream: Any) -> CallInfo:
    """The CallInfo of an RPC from its grpclib stream (what the gate sets in `CALL`)."""
    metadata = stream.metadata
    headers: tuple[tuple[str, str], ...] = ()
    given = None
    if metadata:
        # grpclib left out the pseudo, reserved (grpc-*) and transport headers; binary
        # (-bin) values are bytes, which REST has no equivalent of
        headers = tuple((k, v) for k, v in metadata.items() if isinstance(v, str))
        found = metadata.get("x-request-id")
        given = found if isinstance(found, str) else None
    return CallInfo(stream.deadline, request_id_for(given), given, headers)


def metadata_value(info: CallInfo, key: str) -> str | None:
    """The first value of a metadata key (lower case), e.g. the routing key."""
    return next((v for k, v in info.headers if k == key), None)
