"""Routing: the traffic split across a model's versions and the shadow copies."""
