"""Read the JUnit files of the two sides and render the per-test table."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

PASSED, FAILED, ERROR, SKIPPED, NOT_RUN = "passed", "failed", "error", "skipped", "not run"


def outcomes(junit: Path) -> dict[str, str]:
    """`{test id: outcome}` from one pytest JUnit file (xunit1), ids as `file.py::[Class::]name`.

    Written by pytest with `-o junit_family=xunit1`, which keeps the `file` attribute.
    """
    if not junit.is_file():
        return {}
    found: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        # classname: the module's dotted path from the rootdir (the checkout), then the class
        path = case.get("file", "")
        classname = case.get("classname", "")
        dotted = path.removesuffix(".py").replace("/", ".")
        if path and classname.startswith(dotted):
            cls = classname[len(dotted) :].lstrip(".")
        else:  # an error at collection names no file
            dotted, cls = classname, ""
            path = classname.rsplit(".", 1)[-1] + ".py"
        parts = [Path(path).name, *([cls] if cls else []), case.get("name", "")]
        test_id = "::".join(p for p in parts if p)
        tags = {child.tag for child in case}
        outcome = PASSED
        if "failure" in tags:
            outcome = FAILED
        elif "error" in tags:
            outcome = ERROR
        elif "skipped" in tags:
            outcome = SKIPPED
        # a teardown error adds a second entry for a test that passed: the worse one stands
        if found.get(test_id) in (None, PASSED):
            found[test_id] = outcome
    return found


def summary(results: Mapping[str, str], total: int) -> str:
    """`N of M passed`."""
    passed = sum(1 for outcome in results.values() if outcome == PASSED)
    return f"{passed} of {total} passed"


def table(
    ids: Sequence[str],
    sides: Sequence[tuple[str, Mapping[str, str]]],
    reasons: Mapping[str, str],
) -> str:
    """A markdown table: one row per test id, one column per side, and why ours does not pass."""
    header = ["test (test/pytest/)", *(title for title, _ in sides), "why not passed here"]
    rows = [header, ["---"] * len(header)]
    for test_id in ids:
        cells = [results.get(test_id, NOT_RUN) for _, results in sides]
        ours = cells[-1]
        why = "" if ours == PASSED else reasons.get(test_id, "")
        rows.append([f"`{test_id}`", *cells, why])
    totals = [summary(results, len(ids)) for _, results in sides]
    rows.append(["**total**", *(f"**{t}**" for t in totals), ""])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows) + "\n"


def expand(selection: Sequence[str], seen: Sequence[Mapping[str, str]]) -> list[str]:
    """The test ids of `selection` (whole files expand to the ids pytest reported), in order."""
    ids: list[str] = []
    for item in selection:
        if "::" in item:
            ids.append(item)
            continue
        found = sorted({t for results in seen for t in results if t.split("::")[0] == item})
        ids.extend(found or [item])
    return ids
