"""The handler-facing side of the server: TorchServe's handler API, loaded into executor threads.

`serve/` reaches this package through `handlers.loader.load_service`; nothing here imports
`serve`. Modules that need torch import it themselves; `messages` and `compat` do not.
"""
