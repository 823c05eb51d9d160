"""Dynamic batching: a pure policy and the asyncio batcher that applies it."""
