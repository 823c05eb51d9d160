"""The one call the executor makes: a batch goes to the adapter of its protocol.

Service only invokes the handler; the adapters (TorchServe's own path in Service.predict,
KServe v1 and OIP in handlers.protocols, which hands tensor handlers to handlers.tensor) sit
above it, so control flows one way: here, then an adapter, then Service.invoke.
"""

from __future__ import annotations

from collections.abc import Sequence

from handlers.messages import BatchFailure, HandlerRequest, Output
from handlers.service import IntermediateSink, Service


def run_batch(
    service: Service, batch: Sequence[HandlerRequest], on_intermediate: IntermediateSink
) -> list[Output] | BatchFailure:
    """Run one batch (all of one kind) through the service's handler; under a step
    scheduler, one step of its live sequences (handlers.steps)."""
    if service.continuous:
        from handlers import steps

        return steps.run_step(service, batch, on_intermediate)
    if batch[0].kind:  # KServe v1 or Open Inference Protocol (a batch holds one kind)
        from handlers import protocols  # numpy: only where a protocol request comes

        return protocols.predict(service, batch, on_intermediate)
    return service.predict(batch, on_intermediate)
