"""One step of a step scheduler's live sequences, with TorchServe's continuous-batching rules.

Each live request is in every step once: a new one with its inputs, a continuing one as `{}`
(with its headers); `context.request_ids` keeps each request's id from step to step, so a
handler keys its per-sequence state on it. After the handler returns one result per request,
`context.stopping_criteria[i](result)` says whether result i is the last (True) or one more
chunk (False); without a criterion for i the result is a single, final answer. A request
that leaves without a final result (client gone, deadline) is missing from the next step's
ids, as in TorchServe, and a handler with `release_sequences(ids)` is also told at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from handlers.messages import BatchFailure, HandlerRequest, Output
from handlers.service import (
    IntermediateSink,
    Service,
    UnsupportedOutput,
    batch_inputs,
    make_output,
)

logger = logging.getLogger(__name__)


def run_step(
    service: Service, batch: Sequence[HandlerRequest], on_intermediate: IntermediateSink
) -> list[Output] | BatchFailure:
    """Run one step: one Output per request, final or not, or one failure for the step."""
    data, processors, ids = batch_inputs(batch, [request.steps > 0 for request in batch])
    result = service.invoke_list(data, processors, ids, on_intermediate)
    if isinstance(result, BatchFailure):
        return result
    context = service.context
    criteria = context.stopping_criteria or ()
    try:
        outputs = []
        for idx, value in enumerate(result):
            stop = criteria[idx] if idx < len(criteria) else None
            final = True if stop is None else bool(stop(value))
            outputs.append(
                make_output(context, idx, value, final=final, criterion=stop is not None)
            )
        return outputs
    except UnsupportedOutput as exc:
        logger.warning("Model %s: %s", context.model_name, exc)
        return BatchFailure(503, "Unsupported model output data type.", detail=str(exc))
    except Exception as exc:  # a stopping criterion that raises fails the step, not the server
        logger.warning("Model %s: a stopping criterion failed", context.model_name, exc_info=True)
        return BatchFailure(503, "Prediction failed", detail=f"{type(exc).__name__}: {exc}")
