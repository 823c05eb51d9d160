"""`text_classifier`: TorchServe's TextClassifier, batched over every request of the batch.

TorchServe classifies only `data[0]`; here every request is classified in one forward pass.
The model is called as `model(token_ids, offsets)`, an `nn.EmbeddingBag` style input: the
token ids of all requests concatenated, and where each request starts. Output per request:
`{label: probability}` for every class (softmax), labels from `index_to_name.json`.

Text is cleaned as TorchServe does (HTML tags removed, lower case, common English
contractions expanded, accents and punctuation removed), split on whitespace, and extended
with n-grams (`ngrams: 2`, so "a b" follows "a" and "b"). The vocabulary needs no torchtext:
model-config `handler: {vocab: FILE}`, else the first of `source_vocab.pt` (a torch-saved
dict token → id, or a list of tokens), `vocab.json` (the same, as JSON) and `vocab.txt` (one
token per line, id = line number) in the archive. Unknown tokens map to `<unk>`'s id, else 0.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from handlers.context import Context
from handlers.request_errors import TEXT_HINT, InputError, PerRequestHandler, require_input
from handlers.util import handler_section, map_class_to_label

VOCAB_FILES = ("source_vocab.pt", "vocab.json", "vocab.txt")
_TAGS = re.compile(r"<.*?>")
_PUNCTUATION = re.compile(r"[^\w\s]")
_CONTRACTIONS = (
    ("can't", "cannot"),
    ("won't", "will not"),
    ("n't", " not"),
    ("'re", " are"),
    ("'ll", " will"),
    ("'ve", " have"),
    ("'m", " am"),
    ("'d", " would"),
)


class TextClassifier(PerRequestHandler):
    """Classifies each request's text."""

    ngrams = 2

    def initialize(self, context: Context) -> None:
        """Load the model, the vocabulary and `ngrams`."""
        super().initialize(context)
        section = handler_section(context)
        ngrams = section.get("ngrams", self.ngrams)
        if isinstance(ngrams, bool) or not isinstance(ngrams, int) or ngrams < 1:
            raise ValueError(f"handler.ngrams must be a positive integer: {ngrams!r}")
        self.ngrams = ngrams
        model_dir = str(context.system_properties.get("model_dir"))
        self.source_vocab = load_vocab(model_dir, section.get("vocab"))
        self.unknown_id = self.source_vocab.get("<unk>", 0)

    def preprocess(self, data: list[dict[str, Any]]) -> Any:
        """(token ids of all accepted requests, the offset where each one starts)."""
        ids: list[int] = []
        offsets: list[int] = []
        for idx, row in enumerate(data):
            try:
                text = _text(require_input(row, TEXT_HINT, self.context, idx))
            except InputError as exc:
                self.reject(idx, str(exc))
                continue
            offsets.append(len(ids))
            vocab, unknown = self.source_vocab, self.unknown_id
            ids.extend(vocab.get(token, unknown) for token in ngrams(tokenize(text), self.ngrams))
        if not offsets:
            return None
        device = self.device
        return torch.tensor(ids, dtype=torch.long, device=device), torch.tensor(
            offsets, dtype=torch.long, device=device
        )

    def inference(self, data: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """One forward pass: `model(token_ids, offsets)` → Nxclasses scores."""
        token_ids, offsets = data
        with torch.inference_mode():
            result: torch.Tensor = self.model(token_ids, offsets, *args, **kwargs)
            return result

    def postprocess(self, data: torch.Tensor) -> list[dict[str, float]]:
        """`{label: probability}` for every class, per request."""
        return map_class_to_label(F.softmax(data, dim=1).tolist(), self.mapping)


def tokenize(text: str) -> list[str]:
    """TorchServe's text cleaning, then a whitespace split."""
    text = _TAGS.sub("", text).lower()
    for short, long in _CONTRACTIONS:
        text = text.replace(short, long)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _PUNCTUATION.sub("", text).split()


def ngrams(tokens: list[str], n: int) -> Iterator[str]:
    """torchtext's ngrams_iterator: the tokens, then each 2..n-gram joined by spaces."""
    yield from tokens
    for size in range(2, n + 1):
        for start in range(len(tokens) - size + 1):
            yield " ".join(tokens[start : start + size])


def load_vocab(model_dir: str, name: Any = None) -> dict[str, int]:
    """token → id from the configured file, else the first vocabulary file present."""
    if name is not None and not isinstance(name, str):
        raise ValueError(f"handler.vocab must be a file name: {name!r}")
    candidates = [name] if name else list(VOCAB_FILES)
    for candidate in candidates:
        path = os.path.join(model_dir, candidate)
        if os.path.isfile(path):
            return _read_vocab(path)
    raise ValueError(
        f"text_classifier needs a vocabulary file in the archive: one of {', '.join(candidates)}"
    )


def _read_vocab(path: str) -> dict[str, int]:
    if path.endswith(".txt"):
        with open(path, encoding="utf-8") as f:
            loaded: Any = [line.rstrip("\n") for line in f]
    elif path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            loaded = json.load(f)
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torchtext Vocab object needs torchtext to unpickle
            raise ValueError(
                f"{os.path.basename(path)} must hold a dict token → id or a list of tokens "
                f"(a torchtext Vocab cannot be read without torchtext): {exc}"
            ) from exc
    if isinstance(loaded, list) and all(isinstance(t, str) for t in loaded):
        return {token: i for i, token in enumerate(loaded)}
    if isinstance(loaded, dict) and all(
        isinstance(k, str) and isinstance(v, int) for k, v in loaded.items()
    ):
        return dict(loaded)
    raise ValueError(f"{os.path.basename(path)} must hold a dict token → id or a list of tokens")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"the text is not valid UTF-8: {exc}") from None
    raise InputError(f"expected text, got {type(value).__name__}")
