"""`ts.utils.util`."""

import enum
import logging

from handlers.errors import PredictionException
from handlers.util import (
    PT2_BACKENDS,
    get_yaml_config,
    list_classes_from_module,
    load_label_mapping,
    map_class_to_label,
)

PT2Backend = enum.Enum("PT2Backend", {b.upper(): b for b in PT2_BACKENDS}, type=str)  # type: ignore[misc]


def check_valid_pt2_backend(backend: str) -> bool:
    """Whether BaseHandler passes this backend to torch.compile (warns when not)."""
    if backend in PT2_BACKENDS:
        return True
    logging.getLogger("ts.utils.util").warning("%s is not a supported backend", backend)
    return False


__all__ = [
    "PT2Backend",
    "PredictionException",
    "check_valid_pt2_backend",
    "get_yaml_config",
    "list_classes_from_module",
    "load_label_mapping",
    "map_class_to_label",
]
