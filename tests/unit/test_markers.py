"""Every test module under tests/integration and tests/e2e says what it is with a
module-level `pytestmark`, so `-m integration` or `-m e2e` selects all of it and
`-m "not integration and not e2e"` none of it. Read from the source (ast): no import, and
a missing mark names its module."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
# Each directory's modules carry its marker (besides `slow`, `cluster` or `soak` where due).
MARKER_OF = {"integration": "integration", "e2e": "e2e"}


def modules_under(directory: str) -> list[Path]:
    return sorted((TESTS / directory).glob("test_*.py"))


def mark_name(node: ast.expr) -> str | None:
    """`pytest.mark.<name>` or `pytest.mark.<name>(...)`: the name; anything else: None."""
    if isinstance(node, ast.Call):
        node = node.func
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "mark"):
        return node.attr
    return None


def module_marks(path: Path) -> set[str]:
    """The marker names of the module's `pytestmark` (one mark or a list of them)."""
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(target, ast.Name) and target.id == "pytestmark" for target in targets):
            marks = value.elts if isinstance(value, ast.List | ast.Tuple) else [value]
            return {name for mark in marks if (name := mark_name(mark)) is not None}
    return set()


def test_every_integration_and_e2e_module_carries_its_marker() -> None:
    unmarked = [str(path.relative_to(TESTS)) for directory, marker in MARKER_OF.items()
                for path in modules_under(directory) if marker not in module_marks(path)]
    assert unmarked == [], f"add `pytestmark = pytest.mark.<marker>` to {unmarked}"


def test_module_marks_are_registered(pytestconfig) -> None:
    """A misspelt mark (`pytest.mark.intergration`) selects nothing: every one used at
    module level is declared (pyproject.toml, or by pytest and its plugins)."""
    registered = {line.split(":")[0].split("(")[0].strip()
                  for line in pytestconfig.getini("markers")}
    used = {mark: path.relative_to(TESTS) for directory in MARKER_OF
            for path in modules_under(directory) for mark in module_marks(path)}
    assert {mark: str(path) for mark, path in used.items() if mark not in registered} == {}


def test_the_reader_finds_single_and_listed_marks(tmp_path) -> None:
    single, listed, none = (tmp_path / name for name in ("a.py", "b.py", "c.py"))
    single.write_text("import pytest\npytestmark = pytest.mark.integration\n")
    listed.write_text("import pytest\n"
                      "pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(9)]\n")
    none.write_text("import pytest\n\n@pytest.mark.integration\ndef test_x():\n    pass\n")
    assert module_marks(single) == {"integration"}
    assert module_marks(listed) == {"e2e", "slow", "timeout"}
    assert module_marks(none) == set()  # a mark on one test does not mark its module
