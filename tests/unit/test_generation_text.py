"""Streamed text: UTF-8 held across token splits, stop strings across tokens, finish reasons."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.generation.text import (
    Detokenizer,
    SequenceText,
    StopWatch,
    TextDelta,
    clamp_max_tokens,
)
from handlers.generation.tokenizer import ByteTokenizer

TOKENIZER = ByteTokenizer(["<eos>", "<sp>"], bos=None, eos=["<eos>"])
EOS = TOKENIZER.specials["<eos>"]


def chunk_tokens(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets: each piece stands for one multi-byte token."""
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


class PieceVocab:
    """A vocabulary whose tokens are arbitrary byte strings, like a BPE's."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def ids(self, pieces: list[bytes]) -> list[int]:
        start = len(self.pieces)
        self.pieces.extend(pieces)
        return list(range(start, len(self.pieces)))

    def token_bytes(self, token_id: int) -> bytes:
        return self.pieces[token_id]


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40), st.lists(st.integers(min_value=0), max_size=30))
def test_the_detokenizer_never_emits_a_broken_character(text: str, cuts: list[int]) -> None:
    vocab = PieceVocab()
    detokenizer = Detokenizer(vocab.token_bytes)
    outputs = [detokenizer.push(t) for t in vocab.ids(chunk_tokens(text.encode(), cuts))]
    assert "".join(outputs) == text
    assert all("\ufffd" not in out for out in outputs) or "\ufffd" in text


def test_a_split_emoji_waits_for_its_last_byte() -> None:
    detokenizer = Detokenizer(TOKENIZER.token_bytes)
    emitted = [detokenizer.push(b) for b in "a🙂".encode()]
    assert emitted == ["a", "", "", "", "🙂"]


def test_invalid_bytes_become_replacement_characters_not_silence() -> None:
    detokenizer = Detokenizer(TOKENIZER.token_bytes)
    assert [detokenizer.push(b) for b in b"\xff!"] == ["\ufffd", "!"]


def test_specials_are_left_out_of_the_text() -> None:
    detokenizer = Detokenizer(TOKENIZER.token_bytes, skip=TOKENIZER.special_ids)
    assert detokenizer.push(TOKENIZER.specials["<sp>"]) == ""


def stream(text: SequenceText, token_ids: list[int]) -> list[TextDelta]:
    deltas = []
    for token_id in token_ids:
        deltas.append(text.push(token_id))
        if deltas[-1].finish_reason:
            break
    return deltas


def new_text(max_tokens: int = 100, stop: tuple[str, ...] = ()) -> SequenceText:
    return SequenceText(
        TOKENIZER.token_bytes,
        max_tokens=max_tokens,
        eos_ids=TOKENIZER.eos_ids,
        stop=stop,
        skip_ids=TOKENIZER.special_ids,
    )


def test_a_stop_string_across_tokens_ends_with_the_text_before_it() -> None:
    deltas = stream(new_text(stop=("END",)), list(b"hello ENDworld"))
    assert "".join(d.text for d in deltas) == "hello "
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].matched == "END"
    # nothing of "END" was streamed before the match
    assert all("E" not in d.text for d in deltas)


def test_a_partial_stop_is_held_then_released_when_it_breaks() -> None:
    deltas = stream(new_text(stop=("STOP",)), list(b"xSTOx"))
    assert [d.text for d in deltas] == ["x", "", "", "", "STOx"]
    assert deltas[-1].finish_reason is None


def test_the_earliest_of_several_stops_wins() -> None:
    deltas = stream(new_text(stop=("bc", "abcd", "zzz")), list(b"..abcd"))
    assert "".join(d.text for d in deltas) == "..a"
    assert deltas[-1].matched == "bc"


def test_a_stop_inside_one_token_cuts_that_token() -> None:
    vocab = PieceVocab()
    text = SequenceText(vocab.token_bytes, max_tokens=10, stop=("\n\n",))
    deltas = stream(text, vocab.ids([b"one", b" two\n", b"\nthree"]))
    assert "".join(d.text for d in deltas) == "one two"
    assert deltas[-1].finish_reason == "stop"


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="ab\né", max_size=30),
    st.text(alphabet="ab\né", min_size=1, max_size=4),
    st.lists(st.integers(min_value=0), max_size=20),
)
def test_streamed_text_is_everything_before_the_first_stop(
    text: str, stop: str, cuts: list[int]
) -> None:
    vocab = PieceVocab()
    ids = vocab.ids(chunk_tokens(text.encode(), cuts))
    sequence = SequenceText(vocab.token_bytes, max_tokens=len(ids) or 1, stop=(stop,))
    deltas = stream(sequence, ids)
    streamed = "".join(d.text for d in deltas)
    if stop in text:
        assert streamed == text[: text.index(stop)]
        assert deltas[-1].finish_reason == "stop"
    else:
        assert streamed == text
    # no prefix of what was streamed ever ended inside a stop match
    emitted = ""
    for delta in deltas:
        emitted += delta.text
        assert stop not in emitted


def test_eos_ends_with_stop_and_releases_held_text() -> None:
    deltas = stream(new_text(stop=("xyz",)), [*b"ax", EOS, *b"never"])
    assert "".join(d.text for d in deltas) == "ax"
    assert deltas[-1] == TextDelta("x", "stop", "eos")


def test_max_tokens_ends_with_length() -> None:
    deltas = stream(new_text(max_tokens=3, stop=("cd",)), list(b"abcdef"))
    assert [d.text for d in deltas] == ["a", "b", "c"]
    assert deltas[-1].finish_reason == "length"


def test_a_finished_sequence_takes_no_more_tokens() -> None:
    text = new_text(max_tokens=1)
    text.push(65)
    with pytest.raises(RuntimeError):
        text.push(65)


def test_stop_watch_flush_returns_the_held_prefix() -> None:
    watch = StopWatch(["abc"])
    assert watch.feed("xab") == ("x", None)
    assert watch.flush() == "ab"


@pytest.mark.parametrize(
    ("requested", "prompt", "expected"), [(None, 10, 22), (5, 10, 5), (100, 10, 22), (1, 31, 1)]
)
def test_max_tokens_is_clamped_to_the_context_left(
    requested: int | None, prompt: int, expected: int
) -> None:
    assert clamp_max_tokens(requested, prompt, 32) == expected


def test_a_prompt_that_fills_the_context_is_refused() -> None:
    with pytest.raises(ValueError, match="32"):
        clamp_max_tokens(5, 32, 32)
    with pytest.raises(ValueError, match="max_tokens"):
        clamp_max_tokens(0, 1, 32)


def test_the_text_modules_do_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, handlers.generation.text, handlers.generation.interface, "
        "handlers.generation.tokenizer, handlers.generation.chat; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
