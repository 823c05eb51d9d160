"""The handler-facing side of the server: TorchServe's handler API, loaded into executor threads.

`serve/` loads handlers through `handlers.loader.load_service`, and imports the plain data
and helpers the two sides share (`messages`, `wire`, `metrics`, `batch`, `service`, `util`);
nothing here imports `serve`. Modules that need torch import it themselves; `messages` and
`compat` do not.
"""
