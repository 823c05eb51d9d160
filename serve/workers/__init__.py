"""Executor threads, their devices, and the pool that scales them."""
