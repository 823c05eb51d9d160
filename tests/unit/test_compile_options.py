"""model-config `pt2` → torch.compile options, in TorchServe 0.12's three forms."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.base import compile_options


@pytest.mark.parametrize(
    ("pt2", "expected"),
    [
        (None, None),
        ({"compile": {"enable": True}}, {}),
        (
            {"compile": {"enable": True, "backend": "inductor", "mode": "reduce-overhead"}},
            {"backend": "inductor", "mode": "reduce-overhead"},
        ),
        ({"compile": {"enable": False, "backend": "inductor"}}, None),
        ({"compile": {"enable": "yes"}}, None),  # TorchServe compiles only on a true `enable`
        ({"export": {"aot_compile": True}}, None),
        # the deprecated forms TorchServe 0.12 still reads (its test_torch_compile uses both)
        ("inductor", {"backend": "inductor"}),
        (
            {"backend": "inductor", "mode": "reduce-overhead"},
            {"backend": "inductor", "mode": "reduce-overhead"},
        ),
    ],
)
def test_pt2_forms(pt2: Any, expected: dict[str, Any] | None) -> None:
    assert compile_options(pt2) == expected


def test_a_pt2_of_another_type_is_a_load_error_naming_it() -> None:
    with pytest.raises(ValueError, match="pt2 should be str or dict"):
        compile_options(3)
