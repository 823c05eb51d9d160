"""Test helpers: the server process and its factory, clients, handler sources, stubs."""
