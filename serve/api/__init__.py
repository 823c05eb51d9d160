"""The door-neutral operations: inference, OIP metadata and readiness, management.

No aiohttp or grpclib in here: a front door parses its wire format, calls one of these and
renders the answer.
"""
