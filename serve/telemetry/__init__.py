"""Telemetry: Prometheus metrics, TorchServe's hand-rendered metric names, the access log."""
