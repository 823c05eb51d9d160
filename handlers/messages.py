"""Messages between the server and a handler's service; plain data, no torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from handlers.wire import TensorResult


@dataclass(frozen=True, slots=True)
class Param:
    """One input parameter of a request: the raw body, a form field or a gRPC input entry.

    `content_type` is "" when the client gave none; the service decodes JSON and text
    values in the executor thread, as TorchServe's backend does.
    """

    name: str
    content_type: str
    value: bytes | bytearray


@dataclass(frozen=True, slots=True)
class Output:
    """One response (or one streamed chunk) for one request."""

    body: bytes
    status: int = 200
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    final: bool = True
    tensors: TensorResult | None = None  # an Open Inference Protocol answer, rendered at the door


@dataclass(frozen=True, slots=True)
class BatchFailure:
    """The whole batch failed: every request in it gets this status and message."""

    status: int
    message: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class KVUsage:
    """A generative handler's KV cache after a step: bytes its caches hold, bytes its live
    sequences reserve, its budget (None: unbounded), and sequences held for want of budget."""

    in_use: int
    reserved: int
    budget: int | None
    held: int


class HandlerRequest(Protocol):
    """What a service needs of a queued request; the server's request type provides these."""

    @property
    def request_id(self) -> str: ...

    @property
    def params(self) -> Sequence[Param]: ...

    @property
    def headers(self) -> Sequence[tuple[str, str]]: ...

    @property
    def kind(self) -> int: ...

    @property
    def payload(self) -> object: ...

    @property
    def steps(self) -> int:
        """Steps of a step scheduler this request took part in (0: new to the handler)."""
        ...
