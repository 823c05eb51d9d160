"""`ts.metrics.metric_cache_errors`: TorchServe's metrics cache exceptions, for `except` clauses.

`context.metrics.get_metric` raises `MetricsCacheKeyError` for a metric it does not hold.
"""

import yaml

from handlers.metrics import MetricsCacheKeyError


class GeneralMetricsCacheError(Exception):
    """Any other metrics cache problem."""

    def __init__(self, message: str) -> None:
        super().__init__(f"Generic error: {message}")


class MetricsCacheIOError(IOError):
    """The metrics file could not be read."""

    def __init__(self, message: str) -> None:
        super().__init__(f"Error reading file: {message}")


class MetricsCachePyYamlError(yaml.YAMLError):
    """The metrics file is not valid YAML."""

    def __init__(self, message: str) -> None:
        super().__init__(f"Error parsing file: {message}")


class MetricsCacheTypeError(TypeError):
    """A wrong type given to the cache."""


class MetricsCacheValueError(ValueError):
    """A wrong value given to the cache."""


__all__ = [
    "GeneralMetricsCacheError",
    "MetricsCacheIOError",
    "MetricsCacheKeyError",
    "MetricsCachePyYamlError",
    "MetricsCacheTypeError",
    "MetricsCacheValueError",
]
