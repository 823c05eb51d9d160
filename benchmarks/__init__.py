"""Benchmarks: our server vs TorchServe 0.12 vs a bare aiohttp server (`python -m benchmarks`)."""
