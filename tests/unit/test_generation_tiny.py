"""The tiny byte-level test model: built at test time, loaded like any checkpoint, deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from handlers.generation.chat import ChatTemplate, ChatTemplateError
from handlers.generation.checkpoint import LoadedModel, load_model
from handlers.generation.generate import generate
from handlers.generation.sampling import SamplingParams
from handlers.generation.tiny import (
    CHAT_TEMPLATE,
    SPECIALS,
    build,
    main,
    tiny_tokenizer,
    train,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # the full default build (300 steps, seed 0), as `make` would run it
    return build(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> LoadedModel:
    return load_model(tiny_dir)


def test_the_cli_writes_our_checkpoint_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--out", str(tmp_path / "cli"), "--steps", "2"])
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["config.json", "model.pt"]
    assert "wrote" in capsys.readouterr().out


def test_training_is_deterministic_for_a_seed() -> None:
    first, again = train(steps=5, seed=3), train(steps=5, seed=3)
    other = train(steps=5, seed=4)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    assert not torch.equal(first.embed_tokens.weight, other.embed_tokens.weight)


def test_the_build_loads_through_the_checkpoint_loader(tiny: LoadedModel) -> None:
    assert tiny.decoder.vocab_size == 256 + len(SPECIALS)
    assert tiny.chat_template is not None


def test_greedy_generation_is_deterministic_and_learned_text(tiny: LoadedModel) -> None:
    prompt = tiny.tokenizer.encode("The ")
    first = generate(tiny.decoder, tiny.tokenizer, prompt, max_tokens=40)
    second = generate(tiny.decoder, tiny.tokenizer, prompt, max_tokens=40)
    assert first == second
    assert first.finish_reason == "length"
    assert len(first.token_ids) == 40
    # trained on English prose, the bytes are mostly lower-case letters and spaces
    letters = sum(ch.islower() or ch == " " for ch in first.text)
    assert letters > 0.7 * len(first.text), first.text
    assert tiny.decoder.kv_bytes_in_use() == 0


def test_seeded_sampling_reproduces_and_stops(tiny: LoadedModel) -> None:
    prompt = tiny.tokenizer.encode("def ")
    params = SamplingParams(temperature=0.9, seed=11)
    runs = [
        generate(tiny.decoder, tiny.tokenizer, prompt, params=params, max_tokens=60, stop=["e"])
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert "e" not in runs[0].text


def test_the_chat_template_renders_chatml_with_single_special_ids(tiny: LoadedModel) -> None:
    assert tiny.chat_template is not None
    text = tiny.chat_template.render([{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tiny.tokenizer.encode(text)
    start, end = tiny_tokenizer().specials["<|im_start|>"], tiny_tokenizer().specials["<|im_end|>"]
    assert ids[0] == start
    assert ids.count(start) == 2
    assert ids.count(end) == 1
    assert tiny.tokenizer.decode(ids, skip_special=False) == text
    assert tiny.tokenizer.decode(ids) == "user\nhi\nassistant\n"


def test_byte_tokenizer_round_trips_any_text() -> None:
    tokenizer = tiny_tokenizer()
    text = "naïve 🙂 \t\n<|im_end" + "|>"
    ids = tokenizer.encode(text)
    assert ids[-1] == tokenizer.specials["<|im_end|>"]
    assert tokenizer.decode(ids, skip_special=False) == text


def test_chat_templates_are_sandboxed_and_may_raise() -> None:
    raising = ChatTemplate("{{ raise_exception('only user messages') }}")
    with pytest.raises(ChatTemplateError, match="only user messages"):
        raising.render([])
    escaping = ChatTemplate("{{ messages.__class__.__mro__ }}")
    with pytest.raises(ChatTemplateError):
        escaping.render([{"role": "user", "content": "x"}])
    mutating = ChatTemplate("{{ messages.append(1) }}")
    with pytest.raises(ChatTemplateError):
        mutating.render([])
    with pytest.raises(ChatTemplateError, match="compile"):
        ChatTemplate("{% for %}")
    plain = ChatTemplate(CHAT_TEMPLATE)
    assert plain.render([{"role": "user", "content": "x"}], add_generation_prompt=False) == (
        "<|im_start|>user\nx<|im_end|>\n"
    )
