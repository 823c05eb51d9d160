"""From generated token ids to streamed text: UTF-8-safe detokenizing and stop handling.

Pure Python (no torch), so the server may run it on the event loop.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length"]


class Detokenizer:
    """Token ids in, text out, never a character cut in half.

    Bytes of a character split across tokens wait until the character is complete; bytes
    that can never become valid UTF-8 come out as U+FFFD, as `bytes.decode` would. An
    incomplete character at the very end is dropped, not replaced: it was never text.
    """

    def __init__(self, token_bytes: Callable[[int], bytes], skip: Iterable[int] = ()) -> None:
        self._token_bytes = token_bytes
        self._skip = frozenset(skip)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """The text `token_id` completes (may be empty while a character is incomplete)."""
        if token_id in self._skip:
            return ""
        return self._decoder.decode(self._token_bytes(token_id))


def clamp_max_tokens(requested: int | None, prompt_tokens: int, max_context: int) -> int:
    """Tokens a sequence may generate: what was asked, at most the context left.

    Raises ValueError when the prompt leaves no room at all or `requested` is below 1.
    """
    room = max_context - prompt_tokens
    if room < 1:
        raise ValueError(
            f"the prompt has {prompt_tokens} tokens; the model's context is {max_context}"
        )
    if requested is None:
        return room
    if requested < 1:
        raise ValueError(f"max_tokens must be at least 1, got {requested}")
    return min(requested, room)


@dataclass(frozen=True, slots=True)
class TextDelta:
    """What one generated token adds to a sequence's output."""

    text: str
    finish_reason: FinishReason | None = None
    # the stop string or "eos" that ended the sequence, for logs and the OpenAI `stop_reason`
    matched: str | None = None


class StopWatch:
    """Stop strings over the streamed text, spanning any number of tokens.

    Text that could still turn out to begin a stop string is held back; what is released
    can never be part of a match, so a client never sees a partial stop.
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._held = ""

    def feed(self, text: str) -> tuple[str, str | None]:
        """(text safe to emit, the stop string matched or None); after a match, stop feeding."""
        pending = self._held + text
        match_at, matched = -1, None
        for stop in self._stops:
            at = pending.find(stop)
            if at != -1 and (match_at == -1 or at < match_at):
                match_at, matched = at, stop
        if matched is not None:
            self._held = ""
            return pending[:match_at], matched
        keep = self._longest_stop_prefix_suffix(pending)
        self._held = pending[len(pending) - keep :] if keep else ""
        return pending[: len(pending) - keep], None

    def flush(self) -> str:
        """The held-back text, once the sequence ends without a match."""
        held, self._held = self._held, ""
        return held

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        # a held suffix is shorter than the stop it might start, so only that many chars matter
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), best, -1):
                if stop.startswith(text[len(text) - size :]):
                    best = size
                    break
        return best


class SequenceText:
    """One sequence's output stream: detokenizing, stop strings, EOS and the length limit.

    Feed it every sampled token in order; the delta that carries a finish reason is last.
    """

    def __init__(
        self,
        token_bytes: Callable[[int], bytes],
        *,
        max_tokens: int,
        eos_ids: Iterable[int] = (),
        stop: Iterable[str] = (),
        skip_ids: Iterable[int] = (),
    ) -> None:
        self._detokenizer = Detokenizer(token_bytes, skip_ids)
        self._watch = StopWatch(stop)
        self._eos_ids = frozenset(eos_ids)
        self._max_tokens = max_tokens
        self.generated = 0
        self.finish_reason: FinishReason | None = None

    def push(self, token_id: int) -> TextDelta:
        """Account for one generated token; the text it releases and whether it ended."""
        if self.finish_reason is not None:
            raise RuntimeError("the sequence has already finished")
        self.generated += 1
        if token_id in self._eos_ids:
            return self._finish("stop", self._watch.flush(), "eos")
        text, matched = self._watch.feed(self._detokenizer.push(token_id))
        if matched is not None:
            return self._finish("stop", text, matched)
        if self.generated >= self._max_tokens:
            return self._finish("length", text + self._watch.flush(), None)
        return TextDelta(text)

    def _finish(self, reason: FinishReason, text: str, matched: str | None) -> TextDelta:
        self.finish_reason = reason
        return TextDelta(text, reason, matched)
