"""What needs no key: the one list of exceptions to token authorization.

Everything else on the inference and management servers (REST and gRPC, including routes and
RPCs added later) needs its API's key, because the check sits where every route and RPC is
built (serve.http.apps, serve.grpc.server), not in the handlers.
"""

from __future__ import annotations

import re

from serve.auth.keys import Kind

# Health and readiness (probes carry no secrets) and the API description. Paths are route
# templates with every `{parameter}` written `{}`; a public path is public for any method.
PUBLIC_PATHS = frozenset(
    {
        "/ping",
        "/ready",
        "/ready/{}",
        "/ready/{}/{}",
        "/",  # OPTIONS /: the OpenAPI description
        "/api-description",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{}/ready",
        "/v2/models/{}/versions/{}/ready",
    }
)

PUBLIC_RPCS = frozenset(
    {
        "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Ping",
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ServerReady",
        "/inference.GRPCInferenceService/ModelReady",
    }
)

# Paths opened by another key than their server's: renewing a key takes the API key.
PATH_KEYS: dict[str, Kind] = {"/token": "API"}

_PARAMETER = re.compile(r"\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}")


def template(path: str) -> str:
    """A route path with each `{name}` or `{name:regex}` written `{}`."""
    return _PARAMETER.sub("{}", path)


def key_for_path(path: str, server_kind: Kind) -> Kind | None:
    """The key a REST route template needs on a server, None when it is public."""
    normal = template(path)
    if normal in PUBLIC_PATHS:
        return None
    return PATH_KEYS.get(normal, server_kind)


def key_for_rpc(path: str, server_kind: Kind) -> Kind | None:
    """The key a gRPC method needs on a server, None when it is public."""
    return None if path in PUBLIC_RPCS else server_kind
