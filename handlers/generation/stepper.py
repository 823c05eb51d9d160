"""Many sequences advanced one step at a time: chunked prefill within a token budget, one
batched decode, sampling, stop strings and detokenizing per sequence, and admission within a
KV cache budget.

The executor-side half of the step scheduler (serve.batching.steps): the scheduler decides
which sequences are live; this decides how far each gets in one step.

KV budget: a sequence reserves the cache its prompt and its whole `max_tokens` can take
(TGI's admission by total tokens), so a running sequence never runs out; one that does not fit
waits, unprefilled, until finished or released sequences give their share back, and the ones
behind it wait too (first come, first served). `held` counts them: the loop's scheduler
admits no more into this executor while any is held. A sequence that could never fit is a
400 when it starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from handlers.generation.chat import ChatTemplate
from handlers.generation.interface import GenerationModel
from handlers.generation.sampling import Sampler, SamplingParams
from handlers.generation.text import SequenceText, TextDelta, clamp_max_tokens
from handlers.generation.tokenizer import Tokenizer
from handlers.messages import KVUsage

DEFAULT_PREFILL_BUDGET = 256  # prompt tokens per step, so a long prompt cannot stall decodes


class BadGenerationRequest(ValueError):
    """A request the model cannot run (its 400): bad fields, a prompt past the context."""


@dataclass(slots=True)
class Sequence_:
    """One live sequence: its prompt, how much of it is cached, and its output so far."""

    seq_id: str
    prompt: list[int]
    sampler: Sampler
    text: SequenceText
    prefilled: int = 0
    next_token: int | None = None  # sampled, not yet fed to the model
    emitted: list[int] = field(default_factory=list)
    kv_bytes: int = 0  # reserved: its prompt and max_tokens at the model's bytes per token
    admitted: bool = False  # within the KV budget (its prefill may start)

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt)


@dataclass(frozen=True, slots=True)
class StepOutput:
    """What one step added to one sequence (nothing while its prompt is still prefilling)."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int

    def as_json(self) -> dict[str, Any]:
        """The chunk a handler returns: JSON for TorchServe's doors, parsed by the OpenAI door."""
        return {
            "text": self.text,
            "token_ids": list(self.token_ids),
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


class Stepper:
    """The live sequences of one executor's model, advanced by `step`."""

    def __init__(
        self,
        model: GenerationModel,
        tokenizer: Tokenizer,
        chat_template: ChatTemplate | None,
        *,
        prefill_budget: int = DEFAULT_PREFILL_BUDGET,
        kv_budget_bytes: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.prefill_budget = max(1, prefill_budget)
        self.kv_budget_bytes = kv_budget_bytes  # None: no bound
        self.sequences: dict[str, Sequence_] = {}
        self.kv_reserved = 0  # bytes reserved by admitted sequences
        self.held = 0  # sequences waiting for KV budget after the last step

    def kv_usage(self) -> KVUsage:
        """The caches' bytes, the reservations, the budget and the held sequences, now."""
        return KVUsage(
            self.model.kv_bytes_in_use(), self.kv_reserved, self.kv_budget_bytes, self.held
        )

    def start(self, seq_id: str, body: Any) -> Sequence_:
        """A new sequence from a request body (see `parse`); BadGenerationRequest if unfit."""
        prompt_text, params, max_tokens, stop, ignore_eos = self._parse(body)
        prompt = self.tokenizer.encode(prompt_text)
        if not prompt:
            raise BadGenerationRequest("the prompt is empty")
        try:
            limit = clamp_max_tokens(max_tokens, len(prompt), self.model.max_context)
        except ValueError as exc:
            raise BadGenerationRequest(
                f"{exc}: the prompt (plus at least one generated token) must fit the context"
            ) from None
        text = SequenceText(
            self.tokenizer.token_bytes,
            max_tokens=limit,
            eos_ids=() if ignore_eos else self.tokenizer.eos_ids,
            stop=stop,
            skip_ids=self.tokenizer.special_ids,
        )
        kv_bytes = (len(prompt) + limit) * self.model.kv_bytes_per_token
        budget = self.kv_budget_bytes
        if budget is not None and kv_bytes > budget:
            raise BadGenerationRequest(
                f"the prompt ({len(prompt)} tokens) plus max_tokens ({limit}) need "
                f"{kv_bytes} bytes of KV cache, more than this model's budget of {budget} "
                "bytes (handler.kv_cache_mb): ask for fewer tokens"
            )
        seq = Sequence_(seq_id, prompt, Sampler(params), text, kv_bytes=kv_bytes)
        self.sequences[seq_id] = seq
        return seq

    def release(self, seq_ids: Iterable[str]) -> None:
        """Forget these sequences and free their caches (unknown ids are ignored)."""
        for seq_id in seq_ids:
            seq = self.sequences.pop(seq_id, None)
            if seq is None:
                continue
            if seq.admitted:
                self.kv_reserved -= seq.kv_bytes
            if self.model.sequence_length(seq_id):
                self.model.release(seq_id)

    def step(self, seq_ids: Sequence[str]) -> dict[str, StepOutput]:
        """Advance the named live sequences one step: every decoding one by a token, then
        prompt chunks in order within the step's prefill budget. A finished one is released."""
        out: dict[str, StepOutput] = {}
        live = [self.sequences[s] for s in seq_ids]
        decoding = [s for s in live if s.next_token is not None]
        self._admit(live)
        budget = self.prefill_budget
        prefilling: list[tuple[Sequence_, list[int]]] = []
        for seq in live:
            if seq.next_token is not None:
                continue
            if budget <= 0 or not seq.admitted:
                out[seq.seq_id] = _nothing(seq)  # waits for the next step's budget
                continue
            chunk = seq.prompt[seq.prefilled : seq.prefilled + budget]
            prefilling.append((seq, chunk))
            budget -= len(chunk)
        if decoding or prefilling:  # one forward pass for the decodes and the prompt chunks
            decoded, prefilled = self.model.step(
                [s.seq_id for s in decoding],
                [s.next_token for s in decoding if s.next_token is not None],
                [(seq.seq_id, chunk) for seq, chunk in prefilling],
            )
            for row, seq in enumerate(decoding):
                out[seq.seq_id] = self._sample(seq, decoded[row])
            for row, (seq, chunk) in enumerate(prefilling):
                seq.prefilled += len(chunk)
                if seq.prefilled < len(seq.prompt):
                    out[seq.seq_id] = _nothing(seq)
                else:
                    out[seq.seq_id] = self._sample(seq, prefilled[row])
        for seq_id, output in out.items():
            if output.finish_reason is not None:
                self.release([seq_id])
        return out

    def _admit(self, live: list[Sequence_]) -> None:
        """Reserve KV for waiting sequences in order, until one does not fit."""
        budget = self.kv_budget_bytes
        held = 0
        for seq in live:
            if seq.admitted:
                continue
            if held or (budget is not None and self.kv_reserved + seq.kv_bytes > budget):
                held += 1
                continue
            seq.admitted = True
            self.kv_reserved += seq.kv_bytes
        self.held = held

    def _sample(self, seq: Sequence_, logits: Any) -> StepOutput:
        token = seq.sampler.sample(logits).token_id
        delta: TextDelta = seq.text.push(token)
        seq.next_token = None if delta.finish_reason is not None else token
        return StepOutput(
            delta.text, (token,), delta.finish_reason, seq.prompt_tokens, seq.text.generated
        )

    def _parse(self, body: Any) -> tuple[str, SamplingParams, int | None, list[str], bool]:
        if isinstance(body, bytes | bytearray):
            body = body.decode("utf-8", errors="replace")
        if isinstance(body, str):
            return body, SamplingParams(temperature=0.0), None, [], False
        if not isinstance(body, dict):
            raise BadGenerationRequest("the body must be a JSON object or a text prompt")
        messages = body.get("messages")
        if messages is not None:
            if self.chat_template is None:
                raise BadGenerationRequest("this model has no chat template")
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise BadGenerationRequest("messages must be a list of objects")
            try:
                prompt = self.chat_template.render(messages, add_generation_prompt=True)
            except ValueError as exc:
                raise BadGenerationRequest(str(exc)) from None
        else:
            given = body.get("prompt")
            if not isinstance(given, str):
                raise BadGenerationRequest("prompt must be a string")
            prompt = given
        stop = body.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise BadGenerationRequest("stop must be a string or a list of strings")
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
        ):
            raise BadGenerationRequest("max_tokens must be an integer")
        try:
            params = SamplingParams(
                temperature=float(_number(body, "temperature", 1.0)),
                top_p=float(_number(body, "top_p", 1.0)),
                top_k=int(_number(body, "top_k", 0)),
                seed=None if body.get("seed") is None else int(_number(body, "seed", 0)),
            )
        except ValueError as exc:
            raise BadGenerationRequest(str(exc)) from None
        return prompt, params, max_tokens, stop, bool(body.get("ignore_eos", False))


def _nothing(seq: Sequence_) -> StepOutput:
    return StepOutput("", (), None, seq.prompt_tokens, seq.text.generated)


def _number(body: dict[str, Any], key: str, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number, got {value!r}")
    return value
