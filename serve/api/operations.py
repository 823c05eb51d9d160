"""Model management operations, shared by the REST and the gRPC management APIs.

Each operation takes the parameters its API parsed (a mapping of REST query/JSON values or of
the gRPC fields that were set), validates them, acts on the registry, and returns what
TorchServe answers: a `Reply` (status text and HTTP status) or a JSON-ready body. The API
modules only translate their wire format, so both APIs accept and refuse the same things.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from serve.api.params import bool_param, float_param, int_param, str_param
from serve.config import MAX_INT, MAX_WORKERS, Config
from serve.errors import BadRequest, Conflict, MethodNotAllowed, ServiceUnavailable
from serve.models.registry import RegisterParams, Registry
from serve.models.version import ModelVersion
from serve.request import InferenceRequest
from serve.routing.split import InvalidSplit, Split

MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class Reply:
    """A status reply: TorchServe's message and the HTTP status REST answers with."""

    message: str
    status: int = 200


def list_models(registry: Registry, params: Mapping[str, Any]) -> dict[str, Any]:
    """Default versions sorted by name, paged by an integer offset token."""
    limit = int_param(params, "limit")
    if limit is None or limit < 0 or limit > MAX_PAGE:
        limit = MAX_PAGE
    offset = int_param(params, "next_page_token", minimum=0) or 0
    versions = registry.default_versions()
    page = versions[offset : offset + limit]
    body: dict[str, Any] = {}
    if offset + limit < len(versions):
        body["nextPageToken"] = str(offset + limit)
    body["models"] = [{"modelName": v.name, "modelUrl": v.url} for v in page]
    return body


def check_model_api(config: Config, action: str) -> None:
    """Registering and unregistering need enable_model_api (TorchServe's secure default)."""
    if not config.enable_model_api:
        raise MethodNotAllowed(
            "Model API disabled: start the server with --enable-model-api "
            f"(or enable_model_api: true) to {action} models"
        )


def register_params(values: Mapping[str, Any]) -> RegisterParams:
    """Validated registration parameters."""
    url = str_param(values, "url")
    if url is None:
        raise BadRequest("Parameter url is required.")
    runtime = str_param(values, "runtime")
    if runtime is not None and runtime not in ("python", "python3"):
        raise BadRequest(f"Invalid runtime {runtime!r}: only python is supported")
    return RegisterParams(
        url=url,
        model_name=str_param(values, "model_name"),
        handler=str_param(values, "handler"),
        batch_size=int_param(values, "batch_size", minimum=1, maximum=MAX_INT),
        max_batch_delay=int_param(values, "max_batch_delay", minimum=0, maximum=MAX_INT),
        initial_workers=int_param(values, "initial_workers", minimum=0, maximum=MAX_WORKERS),
        response_timeout=float_param(values, "response_timeout", 0, MAX_INT),
        synchronous=bool_param(values, "synchronous", True),
        startup_timeout=float_param(values, "startup_timeout", 0, MAX_INT),
    )


async def register(registry: Registry, params: RegisterParams) -> Reply:
    """Register an archive from the model store; synchronous waits for its workers."""
    result = await registry.register(params)
    registry.changed()
    version = result.version
    if not params.synchronous:
        return Reply("Processing worker updates...", 202)
    if result.workers == 0:
        return Reply(
            f'Model "{version.name}" Version: {version.version} registered with 0 initial workers. '
            "Use scale workers API to add workers for the model."
        )
    return Reply(
        f'Model "{version.name}" Version: {version.version} registered with '
        f"{result.workers} initial workers"
    )


async def describe(
    registry: Registry, name: str, version: str | None, params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Describe the default version, one version, or `all` versions."""
    customized = bool_param(params, "customized", False)
    versions = registry.versions(name) if version == "all" else [registry.version(name, version)]
    split = registry.traffic(name)
    bodies = []
    for v in versions:
        body = v.describe()
        if split is not None:
            body["trafficSplit"] = split.to_dict()
        if customized and version != "all":
            body["customizedMetadata"] = await _customized(v)
        bodies.append(body)
    return bodies


async def _customized(version: ModelVersion) -> Any:
    """Ask the handler's describe_handle() through a worker, as TorchServe does.

    A generative version's executors run steps over live sequences, where a describe call
    would reach the handler as one more sequence: it answers null (what BaseHandler's own
    describe_handle returns) without a worker."""
    if version.continuous:
        return None
    if version.pool.ready_count == 0:
        raise ServiceUnavailable(
            f'Model "{version.name}" has no worker to serve describe request. '
            "Please use scale workers API to add workers."
        )
    job = InferenceRequest.describe_call(asyncio.get_running_loop())
    version.batcher.submit(job)
    output = await job.future
    try:
        return orjson.loads(output.body)
    except orjson.JSONDecodeError:
        return output.body.decode("utf-8", "replace")


async def scale(
    registry: Registry, name: str, version: str | None, params: Mapping[str, Any]
) -> Reply:
    """Set a version's worker count (min_worker, max_worker); synchronous waits for it."""
    version_name = version or str_param(params, "model_version")
    found = registry.version(name, version_name)
    min_workers = int_param(params, "min_worker", minimum=0, maximum=MAX_WORKERS)
    min_workers = 1 if min_workers is None else min_workers
    max_workers = int_param(params, "max_worker", minimum=0, maximum=MAX_WORKERS)
    max_workers = min_workers if max_workers is None else max_workers
    if max_workers < min_workers:
        raise BadRequest("max_worker cannot be less than min_worker.")
    synchronous = bool_param(params, "synchronous", False)
    reached = await found.scale(
        min_workers, max_workers, wait=found.load_wait if synchronous else None
    )
    registry.changed()
    if not synchronous:
        return Reply("Processing worker updates...", 202)
    if not registry.holds(found):
        raise Conflict(
            f"Model {name} version {found.version} was unregistered by another request "
            "while it was scaling"
        )
    if not reached:
        return Reply("Workers scaling in progress...", 206)
    which = f"model: {name}" + (f", version: {version_name}" if version_name else "")
    return Reply(f"Workers scaled to {min_workers} for {which}")


def set_default(registry: Registry, name: str, version: str) -> Reply:
    """Make a version the default one."""
    registry.set_default(name, version)
    registry.changed()
    return Reply(f'Default version successfully updated for model "{name}" to "{version}"')


async def unregister(registry: Registry, name: str, version: str | None) -> Reply:
    """Remove a version; its queued requests drain first."""
    await registry.unregister(name, version)
    registry.changed()
    return Reply(f'Model "{name}" unregistered')


def get_traffic(registry: Registry, name: str) -> dict[str, Any]:
    """The model's split as set; without one, its default version at weight 100."""
    split = registry.traffic(name)
    if split is None:
        return {registry.version(name).version: 100}
    return split.to_dict()


def set_traffic(registry: Registry, name: str, raw: Any) -> Reply:
    """Split the model's unversioned traffic by the weights in `raw` (the JSON body)."""
    try:
        split = Split.parse(raw)
    except InvalidSplit as exc:
        where = f"Traffic split entry {exc.key!r}: " if exc.key else "Traffic split: "
        raise BadRequest(where + exc.message) from None
    registry.set_traffic(name, split)
    registry.changed()
    return Reply(f'Traffic split updated for model "{name}"')


def clear_traffic(registry: Registry, name: str) -> Reply:
    """Send unversioned traffic to the default version alone."""
    registry.clear_traffic(name)
    registry.changed()
    default = registry.version(name).version
    return Reply(f'Traffic split removed for model "{name}": version {default} takes all')
