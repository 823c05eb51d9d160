"""The error family: the only place HTTP status codes and error types are chosen.

Every failure that reaches a client is a `ServeError`. The HTTP layer turns it into
TorchServe's `{"code", "type", "message"}` body; the gRPC layer into a status.
"""

from __future__ import annotations


class ServeError(Exception):
    """An error with the HTTP status and TorchServe exception type a client sees."""

    status: int = 500
    type: str = "InternalServerException"

    def __init__(
        self, message: str, *, status: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}
        # the model version chosen before it was raised (set by serve.api.infer): REST
        # answers it as X-Model-Version, gRPC as trailing x-model-version
        self.model_version: str | None = None

    def body(self) -> dict[str, object]:
        """The JSON error body TorchServe clients parse."""
        return {"code": self.status, "type": self.type, "message": self.message}


class BadRequest(ServeError):
    """A malformed request or a bad parameter."""

    status = 400
    type = "BadRequestException"


class InvalidModel(ServeError):
    """An archive whose manifest or config is unusable."""

    status = 400
    type = "InvalidModelException"


class DownloadFailed(ServeError):
    """An archive URL that is not allowed, or whose download failed (TorchServe's type)."""

    status = 400
    type = "DownloadArchiveException"


class InvalidKey(ServeError):
    """A request without the key its API needs (missing, wrong, or expired)."""

    status = 401
    type = "InvalidKeyException"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class NotFound(ServeError):
    """An unknown path."""

    status = 404
    type = "ResourceNotFoundException"


class ModelNotFound(ServeError):
    """An unknown model, or an archive that is not in the model store."""

    status = 404
    type = "ModelNotFoundException"


class ModelVersionNotFound(ServeError):
    """An unknown version of a known model."""

    status = 404
    type = "ModelVersionNotFoundException"


class MethodNotAllowed(ServeError):
    """A method the path does not accept, or a disabled API."""

    status = 405
    type = "MethodNotAllowedException"


class Conflict(ServeError):
    """A model version that is already registered."""

    status = 409
    type = "ConflictStatusException"


class InvalidModelVersion(ServeError):
    """An operation refused on this version (e.g. removing the default one)."""

    status = 403
    type = "InvalidModelVersionException"


class PayloadTooLarge(ServeError):
    """A request body over `max_request_size`."""

    status = 413
    type = "RequestEntityTooLargeException"


class ServiceUnavailable(ServeError):
    """The queue is full, or the model has no worker."""

    status = 503
    type = "ServiceUnavailableException"


class RequestTimeout(ServeError):
    """A request that was not answered within its model's response timeout."""

    status = 504
    type = "RequestTimeoutException"


class DeadlineExceeded(ServeError):
    """A request whose client-given or configured deadline passed before it was answered."""

    status = 504
    type = "DeadlineExceededException"


class InternalError(ServeError):
    """A failure inside the model or the server; the message says which."""

    status = 500
    type = "InternalServerException"


class RequestCancelled(ServeError):
    """A request whose client went away before it was answered."""

    status = 499
    type = "RequestCancelledException"


def no_worker(model: str, version: str | None = None) -> ServiceUnavailable:
    """TorchServe's message when a model cannot take a request (no worker or full queue)."""
    which = f'Model "{model}"' if version is None else f'Model "{model}" Version {version}'
    return ServiceUnavailable(
        f"{which} has no worker to serve inference request. "
        "Please use scale workers API to add workers.",
        headers={"Retry-After": "1"},
    )
