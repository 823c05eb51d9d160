"""What the OpenAI model list says: the generative model versions, by id.

Shared by the doors that answer `GET /v1/models` (KServe v1 and OpenAI use the same path,
so one answer carries both shapes: KServe's `models`, OpenAI's `object` and `data`).
"""

from __future__ import annotations

import time
from typing import Any

from serve.models.registry import Registry

STARTED = int(time.time())  # `created` of the entries: when this server started


def generative_ids(registry: Registry) -> list[str]:
    """Each model with a generative version, by name and as `name/version`."""
    ids = []
    for name, model in sorted(registry.models.items()):
        versions = [v for _, v in sorted(model.versions.items()) if v.generative]
        if versions:
            ids.append(name)
            ids.extend(f"{name}/{v.version}" for v in versions)
    return ids


def model_entry(model_id: str) -> dict[str, Any]:
    """OpenAI's model object."""
    return {"id": model_id, "object": "model", "created": STARTED, "owned_by": "serve"}


def model_list(registry: Registry) -> dict[str, Any]:
    """OpenAI's list of models."""
    return {"object": "list", "data": [model_entry(i) for i in generative_ids(registry)]}
