"""A tiny byte-level Llama for tests, trained in seconds on text that ships with Python.

`python -m handlers.generation.tiny --out DIR` writes it in our checkpoint format
(`checkpoint.load_model` reads it). The corpus is `pydoc_data.topics` (the language
reference), one `<|endoftext|>` between topics so the model learns to stop. Same seed and
thread count, same weights; the text it writes is English-shaped, not meaningful.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from handlers.generation.checkpoint import save_checkpoint
from handlers.generation.llama import Llama, LlamaConfig
from handlers.generation.tokenizer import ByteTokenizer

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
EOS = ("<|endoftext|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TINY_CONFIG = LlamaConfig(
    vocab_size=256 + len(SPECIALS),
    dim=64,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    ffn_dim=192,
    max_context=512,
    rope_theta=10000.0,
    norm_eps=1e-5,
    tie_embeddings=True,
)


def tiny_tokenizer() -> ByteTokenizer:
    """Bytes 0-255 plus `SPECIALS`."""
    return ByteTokenizer(SPECIALS, bos=None, eos=EOS)


def corpus(tokenizer: ByteTokenizer) -> torch.Tensor:
    """The training text as token ids: every pydoc topic, end-of-text between them."""
    from pydoc_data.topics import topics

    end = tokenizer.specials["<|endoftext|>"]
    ids: list[int] = []
    for name in sorted(topics):
        ids.extend(tokenizer.encode(topics[name]))
        ids.append(end)
    return torch.tensor(ids, dtype=torch.long)


def train(
    *, steps: int = 300, seed: int = 0, batch: int = 8, context: int = 64, lr: float = 5e-3
) -> Llama:
    """Train `TINY_CONFIG` from `seed` for `steps` AdamW steps on random corpus windows.

    One thread: these matrices are too small to gain from more, a busy machine makes
    extra threads much slower, and the float sums then do not depend on the core count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(steps=steps, seed=seed, batch=batch, context=context, lr=lr)
    finally:
        torch.set_num_threads(threads)


def _train(*, steps: int, seed: int, batch: int, context: int, lr: float) -> Llama:
    generator = torch.Generator().manual_seed(seed)
    model = Llama(TINY_CONFIG)
    model.init_weights(generator)
    data = corpus(tiny_tokenizer())
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(data) - context - 1, (batch,), generator=generator)
        windows = torch.stack([data[s : s + context + 1] for s in starts.tolist()])
        logits = model(windows[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        schedule.step()
    return model.eval().requires_grad_(False)


def build(out: Path, *, steps: int = 300, seed: int = 0) -> Path:
    """Train and write the tiny model to `out`; returns `out`."""
    model = train(steps=steps, seed=seed)
    save_checkpoint(
        out,
        model,
        tokenizer={"type": "bytes", "specials": list(SPECIALS), "bos": None, "eos": list(EOS)},
        chat_template=CHAT_TEMPLATE,
    )
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI: build the tiny model into `--out`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    build(args.out, steps=args.steps, seed=args.seed)
    print(f"wrote {args.out} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
