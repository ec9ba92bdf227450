"""The mutation check (benchmarks/mutants.py) stays meaningful as the code moves.

Its mutants are exact edits of the source; a refactor that renames the edited line would
silently turn a mutant into a no-op, and a renamed test would leave it unjudged. This runs
in the suite (it transcribes nothing), so the check fails when that happens rather than
when someone next runs the slow script.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _mutants():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("mutants", REPO / "benchmarks" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutants"] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def test_every_mutant_applies_once_and_names_existing_tests() -> None:
    mutants = _mutants()
    assert mutants.check() == []


def test_the_four_mutants_of_issue_13_are_in_the_list() -> None:
    """The bugs an earlier review found the suite blind to stay in the check for good."""
    names = {m.name for m in _mutants().MUTANTS}
    assert {
        "cli-tsv-refused",
        "json-words-get-the-segment-start",
        "npu-failure-counter-never-reset",
        "whisperx-npu-ignores-attention-setting",
    } <= names


def test_check_reports_a_mutant_whose_text_is_gone(tmp_path: Path) -> None:
    """The guard above can fail: a mutant whose line was edited away is reported."""
    mutants = _mutants()
    (tmp_path / "m.py").write_text("x = 1\n")
    (tmp_path / "test_m.py").write_text("def test_x():\n    pass\n")
    gone = mutants.Mutant("gone", "m.py", (("x = 2", "x = 3"),), ("test_m.py::test_x",), "-")
    missing = mutants.Mutant("missing", "m.py", (("x = 1", "x = 3"),), ("test_m.py::test_y",), "-")
    problems = mutants.check((gone, missing), root=tmp_path)
    assert len(problems) == 2
    assert "0 copies" in problems[0] and "no test test_m.py::test_y" in problems[1]
