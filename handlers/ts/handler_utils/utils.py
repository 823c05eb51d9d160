"""`ts.handler_utils.utils`."""

from handlers.streaming import send_intermediate_predict_response

__all__ = ["send_intermediate_predict_response"]
