"""`ts.protocol.otf_message_handler` (only its deprecated streaming helper)."""

from handlers.streaming import send_intermediate_predict_response

__all__ = ["send_intermediate_predict_response"]
