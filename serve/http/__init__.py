"""The REST APIs: inference, management and metrics (no torch here)."""
