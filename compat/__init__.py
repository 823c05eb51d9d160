"""Tools that check this server against TorchServe 0.12 itself (not part of the server)."""
