"""`ts.metrics.unit`: TorchServe's short unit names and the names they stand for."""


class Units:
    """`Units().units` maps a short unit (`ms`, `MB`, ...) to its long name."""

    def __init__(self) -> None:
        self.units: dict[str | None, str] = {
            "ms": "Milliseconds",
            "s": "Seconds",
            "percent": "Percent",
            "count": "Count",
            "MB": "Megabytes",
            "GB": "Gigabytes",
            "kB": "Kilobytes",
            "B": "Bytes",
            "": "unit",
            None: "unit",
        }


__all__ = ["Units"]
