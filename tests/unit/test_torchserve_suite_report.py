"""The TorchServe-tests runner's report: JUnit outcomes per test id and the markdown table."""

from __future__ import annotations

from pathlib import Path

from compat.torchserve_tests import report

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="test.pytest.test_a" name="test_ok" file="test/pytest/test_a.py" />
<testcase classname="test.pytest.test_a" name="test_bad[5]" file="test/pytest/test_a.py">
<failure message="assert 504 == 500" /></testcase>
<testcase classname="test.pytest.test_b.TestB" name="test_m" file="test/pytest/test_b.py">
<skipped message="no" /></testcase>
<testcase classname="test.pytest.test_b.TestB" name="test_n" file="test/pytest/test_b.py" />
<testcase classname="test.pytest.test_b.TestB" name="test_n" file="test/pytest/test_b.py">
<error message="teardown" /></testcase>
<testcase classname="test_c" name="" ><error message="collection" /></testcase>
</testsuite></testsuites>
"""


def test_outcomes_name_tests_as_pytest_ids_and_keep_the_worse_of_two_entries(
    tmp_path: Path,
) -> None:
    junit = tmp_path / "side.xml"
    junit.write_text(JUNIT)
    assert report.outcomes(junit) == {
        "test_a.py::test_ok": report.PASSED,
        "test_a.py::test_bad[5]": report.FAILED,
        "test_b.py::TestB::test_m": report.SKIPPED,
        "test_b.py::TestB::test_n": report.ERROR,  # passed, then failed its teardown
        "test_c.py": report.ERROR,
    }
    assert report.outcomes(tmp_path / "absent.xml") == {}


def test_the_table_has_a_row_per_test_totals_and_the_reason_only_where_ours_fails() -> None:
    theirs = {"test_a.py::test_ok": report.PASSED, "test_a.py::test_bad": report.PASSED}
    ours = {"test_a.py::test_ok": report.PASSED, "test_a.py::test_bad": report.FAILED}
    ids = report.expand(["test_a.py", "test_z.py::test_never"], [theirs, ours])
    assert ids == ["test_a.py::test_bad", "test_a.py::test_ok", "test_z.py::test_never"]
    reasons = {"test_a.py::test_bad": "504, not 500", "test_a.py::test_ok": "unused"}
    lines = report.table(ids, [("TorchServe 0.12", theirs), ("this server", ours)], reasons)
    rows = lines.splitlines()
    assert (
        rows[0] == "| test (test/pytest/) | TorchServe 0.12 | this server | why not passed here |"
    )
    assert rows[2] == "| `test_a.py::test_bad` | passed | failed | 504, not 500 |"
    assert rows[3] == "| `test_a.py::test_ok` | passed | passed |  |"
    assert rows[4] == "| `test_z.py::test_never` | not run | not run |  |"
    assert rows[5] == "| **total** | **2 of 3 passed** | **1 of 3 passed** |  |"
