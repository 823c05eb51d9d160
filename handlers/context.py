"""TorchServe's `Context` and `RequestProcessor`, with the same constructor and methods.

An executor keeps one Context for the life of its handler and refills the per-batch fields
(`request_ids`, `request_processor`) before each call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from handlers.messages import Output


class RequestProcessor:
    """Per-request headers in, status and headers out."""

    def __init__(self, request_header: dict[str, Any]) -> None:
        self._status_code = 200
        self._reason_phrase: str | None = None
        self._response_header: dict[str, str] = {}
        self._request_header = request_header

    def get_request_property(self, key: str) -> Any:
        """A request header (case as the client sent it), or a parameter's content-type dict."""
        return self._request_header.get(key)

    def report_status(self, code: int, reason_phrase: str | None = None) -> None:
        """Set this request's HTTP status."""
        self._status_code = code
        self._reason_phrase = reason_phrase

    def get_response_status_code(self) -> int:
        """The status this request will be answered with."""
        return self._status_code

    def get_response_status_phrase(self) -> str | None:
        """The reason phrase set with the status, if any."""
        return self._reason_phrase

    def add_response_property(self, key: str, value: str) -> None:
        """Set a response header."""
        self._response_header[key] = value

    def get_response_headers(self) -> dict[str, str]:
        """The response headers set so far."""
        return self._response_header

    def get_response_header(self, key: str) -> str | None:
        """One response header."""
        return self._response_header.get(key)

    def get_request_properties(self) -> dict[str, Any]:
        """All request headers."""
        return self._request_header


class Context:
    """What a handler knows about its model, its device and the requests of the current batch."""

    def __init__(
        self,
        model_name: str,
        model_dir: str,
        manifest: dict[str, Any] | None,
        batch_size: int,
        gpu: int | None,
        mms_version: str,
        limit_max_image_pixels: bool = True,
        metrics: Any = None,
        model_yaml_config: dict[str, Any] | None = None,
    ) -> None:
        self.model_name = model_name
        self.manifest = manifest
        self._system_properties: dict[str, Any] = {
            "model_dir": model_dir,
            "gpu_id": gpu,
            "batch_size": batch_size,
            "server_name": "MMS",
            "server_version": mms_version,
            "limit_max_image_pixels": limit_max_image_pixels,
        }
        self.request_ids: dict[int, str] | None = None
        self._request_processor: list[RequestProcessor] | None = None
        self._metrics = metrics
        self.model_yaml_config: dict[str, Any] = model_yaml_config or {}
        self.stopping_criteria: list[Callable[[Any], bool]] | None = None
        self.cl_socket: Any = None
        self.header_key_sequence_id = os.getenv("TS_REQUEST_SEQUENCE_ID", "ts_request_sequence_id")
        self.header_key_sequence_start = os.getenv(
            "TS_REQUEST_SEQUENCE_START", "ts_request_sequence_start"
        )
        self.header_key_sequence_end = os.getenv(
            "TS_REQUEST_SEQUENCE_END", "ts_request_sequence_end"
        )
        # Set by the service for the current batch: sends one intermediate response.
        self.intermediate_sender: Callable[[int, Output], None] | None = None

    @property
    def system_properties(self) -> dict[str, Any]:
        """model_dir, gpu_id (None on CPU), batch_size, server_name, server_version, ..."""
        return self._system_properties

    @property
    def request_processor(self) -> list[RequestProcessor] | None:
        """One RequestProcessor per request of the current batch."""
        return self._request_processor

    @request_processor.setter
    def request_processor(self, request_processor: list[RequestProcessor] | None) -> None:
        self._request_processor = request_processor

    @property
    def metrics(self) -> Any:
        """The metrics cache (TorchServe's `add_counter`, `add_time`, ... calls)."""
        return self._metrics

    @metrics.setter
    def metrics(self, metrics: Any) -> None:
        self._metrics = metrics

    def _processor(self, idx: int) -> RequestProcessor:
        if self._request_processor is None:
            raise IndexError(f"no request at index {idx}: the context holds no batch")
        return self._request_processor[idx]

    def get_request_id(self, idx: int = 0) -> str | None:
        """The id of the idx-th request of the batch (also its x-request-id header)."""
        if self.request_ids is None:
            return None
        return self.request_ids.get(idx)

    def get_request_header(self, idx: int, key: str) -> Any:
        """A request header of the idx-th request; names are matched as the client sent them."""
        return self._processor(idx).get_request_property(key)

    def get_all_request_header(self, idx: int) -> dict[str, Any]:
        """All request headers of the idx-th request."""
        return self._processor(idx).get_request_properties()

    def set_response_content_type(self, idx: int, value: str) -> None:
        """Set the Content-Type of the idx-th response."""
        self.set_response_header(idx, "content-type", value)

    def get_response_content_type(self, idx: int) -> str | None:
        """The Content-Type set for the idx-th response, if any."""
        return self.get_response_headers(idx).get("content-type")

    def get_response_status(self, idx: int) -> tuple[int, str | None]:
        """(status code, reason phrase) of the idx-th response."""
        processor = self._processor(idx)
        return processor.get_response_status_code(), processor.get_response_status_phrase()

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        """Set the status of the idx-th response (note: code first, index last)."""
        if self._request_processor is not None and self._request_processor[idx] is not None:
            self._request_processor[idx].report_status(code, reason_phrase=phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        """Set the status of every response of the batch."""
        for processor in self._request_processor or []:
            processor.report_status(code, reason_phrase=phrase)

    def get_response_headers(self, idx: int) -> dict[str, str]:
        """The headers set for the idx-th response."""
        return self._processor(idx).get_response_headers()

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        """Set a header of the idx-th response."""
        self._processor(idx).add_response_property(key, value)

    def get_sequence_id(self, idx: int) -> Any:
        """The sequence id header of the idx-th request (stateful models)."""
        return self._processor(idx).get_request_property(self.header_key_sequence_id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Context) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]
