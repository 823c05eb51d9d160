"""The one place where errors become gRPC statuses.

`grpc_status` maps a ServeError's HTTP status to a gRPC code exactly as TorchServe's
GRPCUtils does, except 405 (a disabled model API), which is PERMISSION_DENIED as TorchServe's
gRPC management API answers it. `guarded` applies the mapping to a whole RPC, and names the
model version an error was raised for in the trailing `x-model-version`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from serve.errors import ServeError
from serve.grpc.common import MODEL_VERSION
from serve.grpc.gen.google.rpc import Status as RpcStatus

logger = logging.getLogger(__name__)

_BY_HTTP_STATUS = {
    400: Status.INVALID_ARGUMENT,
    401: Status.UNAUTHENTICATED,
    403: Status.PERMISSION_DENIED,
    404: Status.NOT_FOUND,
    405: Status.PERMISSION_DENIED,
    409: Status.ABORTED,
    413: Status.RESOURCE_EXHAUSTED,
    416: Status.OUT_OF_RANGE,
    429: Status.RESOURCE_EXHAUSTED,
    499: Status.CANCELLED,
    501: Status.UNIMPLEMENTED,
    503: Status.UNAVAILABLE,
    504: Status.DEADLINE_EXCEEDED,
}

INTERNAL_MESSAGE = "Internal server error; see the server log"


def grpc_status(http_status: int) -> Status:
    """The gRPC code for an HTTP status: other 4xx FAILED_PRECONDITION, the rest INTERNAL."""
    found = _BY_HTTP_STATUS.get(http_status)
    if found is not None:
        return found
    if 400 <= http_status < 500:
        return Status.FAILED_PRECONDITION
    return Status.INTERNAL


def grpc_error(error: ServeError) -> GRPCError:
    """A ServeError as the GRPCError that ends an RPC."""
    return GRPCError(grpc_status(error.status), error.message)


def rpc_status(error: ServeError) -> RpcStatus:
    """A ServeError as an in-band google.rpc.Status (StreamPredictions2 answers)."""
    return RpcStatus(code=grpc_status(error.status).value, message=error.message)


Rpc = Callable[[Any], Awaitable[None]]


def guarded(rpc: Rpc, name: str) -> Rpc:
    """Wrap a grpclib method handler: ServeErrors become their status, unknown errors INTERNAL.

    grpclib's own signals pass through: GRPCError, a client's reset (StreamTerminatedError),
    and the TimeoutError it raises itself when a client's deadline expires.
    """

    async def run(stream: Any) -> None:
        try:
            await rpc(stream)
        except ServeError as error:
            if error.model_version is not None and not stream._send_trailing_metadata_done:
                # the error names the version chosen (serve.api.infer): grpclib's own error
                # trailers carry no metadata, so these are sent here; the GRPCError raised
                # next only tells the access log the status
                await stream.send_trailing_metadata(
                    status=grpc_status(error.status),
                    status_message=error.message,
                    metadata={MODEL_VERSION: error.model_version},
                )
            raise grpc_error(error) from error
        except (GRPCError, StreamTerminatedError, TimeoutError):
            raise
        except Exception as exc:
            logger.exception("Unhandled error in gRPC %s", name)
            raise GRPCError(Status.INTERNAL, INTERNAL_MESSAGE) from exc

    return run
