"""The generation engine: decoder models a step scheduler drives one decode step at a time.

`interface` (the contract), `text` (detokenizing and stop handling) and `tokenizer` are
pure Python, so the server's event loop may import them; `llama`, `kv_cache`, `sampling`,
`gguf_loader`, `checkpoint` and `tiny` import torch and belong on the executor side.
This module imports none of them.
"""
