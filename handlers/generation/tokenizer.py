"""Tokenizers the engine uses: byte-level BPE from a GGUF file, and plain bytes for tiny models.

Both expose `token_bytes`, the raw bytes a token stands for, so streaming text is assembled
from bytes (`text.Detokenizer`) and a character split across tokens is never cut. No torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Protocol

from tokenizers import AddedToken, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as RustTokenizer

# GGUF token types (gguf.TokenType): CONTROL tokens are specials, USER_DEFINED are added text
_CONTROL = 3
_USER_DEFINED = 4


class Tokenizer(Protocol):
    """Text to token ids and back, plus the ids that matter to generation."""

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        ...

    @property
    def eos_ids(self) -> frozenset[int]:
        """Ids that end a generation (finish reason `stop`)."""
        ...

    @property
    def bos_id(self) -> int | None:
        """Id of the beginning-of-sequence token, if the model has one."""
        ...

    @property
    def special_ids(self) -> frozenset[int]:
        """Control tokens, left out of generated text."""
        ...

    def token_str(self, token_id: int) -> str:
        """The vocabulary's name for `token_id` (for chat templates and logprob displays)."""
        ...

    def encode(self, text: str) -> list[int]:
        """Ids of `text`; special-token names in it become their single ids."""
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes `token_id` stands for (a special token: its name in UTF-8)."""
        ...

    def decode(self, token_ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of `token_ids`, invalid UTF-8 replaced by U+FFFD."""
        ...


@cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, inverted (char → byte)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars, strict=True)}


_PRE_TOKENIZERS = {
    # llama.cpp's `smollm` pre-type: each digit alone, then GPT-2's regex (as SmolLM2's
    # tokenizer.json: Digits(individual) + ByteLevel)
    "smollm": lambda: pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    ),
    "gpt-2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    "default": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
}


@dataclass(frozen=True, slots=True)
class BPESpec:
    """What a GGUF file says about its byte-level BPE tokenizer (`tokenizer.ggml.*`)."""

    tokens: Sequence[str]
    token_types: Sequence[int]
    merges: Sequence[str]
    pre: str
    bos_id: int | None
    eos_id: int | None


class ByteLevelBPE:
    """GPT-2-style byte-level BPE, run by HF `tokenizers`, built from a GGUF vocabulary."""

    def __init__(self, spec: BPESpec) -> None:
        if spec.pre not in _PRE_TOKENIZERS:
            known = sorted(_PRE_TOKENIZERS)
            raise ValueError(f"tokenizer.ggml.pre {spec.pre!r} is not supported (known: {known})")
        vocab = {token: index for index, token in enumerate(spec.tokens)}
        merges = [_merge_pair(merge) for merge in spec.merges]
        rust = RustTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        rust.pre_tokenizer = _PRE_TOKENIZERS[spec.pre]()  # type: ignore[no-untyped-call]
        rust.decoder = decoders.ByteLevel()
        specials = [i for i, kind in enumerate(spec.token_types) if kind == _CONTROL]
        added = [i for i, kind in enumerate(spec.token_types) if kind == _USER_DEFINED]
        rust.add_special_tokens(
            [AddedToken(spec.tokens[i], special=True, normalized=False) for i in specials]
        )
        rust.add_tokens([AddedToken(spec.tokens[i], normalized=False) for i in added])
        self._rust = rust
        self._tokens = list(spec.tokens)
        self._plain = frozenset(added)
        self._special_ids = frozenset(specials)
        self._bos_id = spec.bos_id
        eos = {spec.eos_id} if spec.eos_id is not None else set()
        # llama.cpp also ends generation on these end-of-text names when the vocabulary has them
        eos.update(
            vocab[name] for name in ("<|endoftext|>", "<|im_end|>", "<|eot_id|>") if name in vocab
        )
        self._eos_ids = frozenset(eos)
        self._bytes: list[bytes | None] = [None] * len(self._tokens)

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        return len(self._tokens)

    @property
    def eos_ids(self) -> frozenset[int]:
        """The file's eos id plus the vocabulary's end-of-text tokens."""
        return self._eos_ids

    @property
    def bos_id(self) -> int | None:
        """`tokenizer.ggml.bos_token_id`."""
        return self._bos_id

    @property
    def special_ids(self) -> frozenset[int]:
        """CONTROL tokens of the file."""
        return self._special_ids

    def token_str(self, token_id: int) -> str:
        """The vocabulary entry (byte-level characters, or a special's name)."""
        return self._tokens[token_id]

    def encode(self, text: str) -> list[int]:
        """Ids of `text`; no BOS is added (SmolLM2's `add_bos_token` is false)."""
        return list(self._rust.encode(text, add_special_tokens=False).ids)

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one token, cached."""
        cached = self._bytes[token_id]
        if cached is None:
            name = self._tokens[token_id]
            if token_id in self._special_ids or token_id in self._plain:
                cached = name.encode()
            else:
                table = _byte_decoder()
                cached = bytes(table[char] for char in name)
            self._bytes[token_id] = cached
        return cached

    def decode(self, token_ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of `token_ids`."""
        return _decode_bytes(self, token_ids, skip_special)


class ByteTokenizer:
    """Ids 0-255 are bytes; specials follow from 256. For tiny test models."""

    def __init__(self, specials: Sequence[str], *, bos: str | None, eos: Iterable[str]) -> None:
        self._specials = {name: 256 + index for index, name in enumerate(specials)}
        self._names = list(specials)
        self._bos_id = None if bos is None else self._specials[bos]
        self._eos_ids = frozenset(self._specials[name] for name in eos)
        self._split = (
            re.compile("(" + "|".join(re.escape(name) for name in specials) + ")")
            if specials
            else None
        )

    @property
    def vocab_size(self) -> int:
        """256 bytes plus the specials."""
        return 256 + len(self._names)

    @property
    def eos_ids(self) -> frozenset[int]:
        """Ids of the `eos` specials."""
        return self._eos_ids

    @property
    def bos_id(self) -> int | None:
        """Id of the `bos` special."""
        return self._bos_id

    @property
    def special_ids(self) -> frozenset[int]:
        """Every id from 256 on."""
        return frozenset(self._specials.values())

    @property
    def specials(self) -> Mapping[str, int]:
        """Special names and their ids."""
        return dict(self._specials)

    def token_str(self, token_id: int) -> str:
        """A special's name, or the byte as `<0xNN>` when it is not printable ASCII."""
        if token_id >= 256:
            return self._names[token_id - 256]
        return chr(token_id) if 0x20 <= token_id < 0x7F else f"<0x{token_id:02X}>"

    def encode(self, text: str) -> list[int]:
        """UTF-8 bytes of `text`, special names as their ids."""
        parts = self._split.split(text) if self._split is not None else [text]
        ids: list[int] = []
        for part in parts:
            special = self._specials.get(part)
            if special is not None:
                ids.append(special)
            else:
                ids.extend(part.encode())
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        """One byte, or a special's name."""
        if token_id >= 256:
            return self._names[token_id - 256].encode()
        return bytes((token_id,))

    def decode(self, token_ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of `token_ids`."""
        return _decode_bytes(self, token_ids, skip_special)


def _merge_pair(merge: str) -> tuple[str, str]:
    left, _, right = merge.partition(" ")
    return left, right


def _decode_bytes(tokenizer: Tokenizer, token_ids: Sequence[int], skip_special: bool) -> str:
    specials = tokenizer.special_ids if skip_special else frozenset()
    raw = b"".join(tokenizer.token_bytes(t) for t in token_ids if t not in specials)
    return raw.decode("utf-8", errors="replace")
