"""The gRPC APIs (TorchServe's inference.proto and management.proto) over grpclib."""
