"""pytorch/serve v0.12.0's own integration tests, run against this server and TorchServe."""
