"""Who may import whom (ARCHITECTURE.md, "Parts and arrows"), read from the source with
`ast`: every import statement counts, the ones inside functions too.

- services never import each other (they meet on NATS, through `contracts/`);
- the gateway and `terra/` import no service; the gateway no ML library and no `fluxkit/`;
- `fluxkit/` imports no service, no `terra/`, no `contracts/` and no broker;
- `contracts/` imports pydantic and the standard library only;
- nothing outside `tests/` imports `tests/` (`bench/` and `testing/` included), and only
  tests and benches import `testing/`;
- inside `terra/`, a room imports only the floor (the modules at its root) and the rooms
  below it: ops > jobs > runtime > records > nats > floor.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = frozenset(path.parent.name for path in ROOT.glob("*_service/__init__.py"))
ML = frozenset({"torch", "diffusers", "transformers", "peft", "accelerate", "optimum",
                "safetensors", "fluxkit"})
BROKER = frozenset({"nats", "faststream"})
CODE = frozenset({"tests", "bench", "testing"})  # imports nothing of these but themselves

FORBIDDEN: dict[str, frozenset[str]] = {
    **{service: SERVICES - {service} | {"gateway"} | CODE for service in SERVICES},
    "gateway": SERVICES | ML | CODE,
    "terra": SERVICES | {"gateway", "fluxkit"} | CODE,
    "fluxkit": SERVICES | {"terra", "gateway", "contracts"} | BROKER | CODE,
    "bench": frozenset({"tests"}),
    "testing": frozenset({"tests", "bench"}),
}
# The rooms of terra/, top to bottom; each may import the ones after it and the floor.
ROOMS = ("ops", "jobs", "runtime", "records", "nats")
CONTRACTS_MAY_IMPORT = frozenset({"contracts", "pydantic"}) | sys.stdlib_module_names


def imported_modules(path: Path) -> set[str]:
    """The dotted names a file imports, whole (`from terra.nats import x` is terra.nats)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
            if node.module == "terra":  # `from terra import nats`: the room itself
                names.update(f"terra.{alias.name}" for alias in node.names)
    return names


def room_of(module: str) -> str | None:
    """The room of a dotted terra name; None for the floor (terra/*.py) and non-terra."""
    parts = module.split(".")
    if parts[0] != "terra" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ROOMS else None


def room_violations(root: Path = ROOT) -> list[str]:
    """`file: module` for every terra import that points up a room, or sideways."""
    found = []
    for path in sorted((root / "terra").rglob("*.py")):
        relative = path.relative_to(root)
        here = relative.parts[1] if len(relative.parts) > 2 else None  # None: the floor
        allowed = set(ROOMS[ROOMS.index(here) + 1:]) if here else set()
        for module in sorted(imported_modules(path)):
            there = room_of(module)
            if there is not None and there != here and there not in allowed:
                found.append(f"{relative}: {module}")
    return found


def imported(path: Path, package: str) -> set[str]:
    """The top-level names a file imports (a relative import is its own package)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(package if node.level else (node.module or "").partition(".")[0])
    return names


def violations(package: str, forbidden=None, allowed=None, root: Path = ROOT) -> list[str]:
    """`file: name` for every import of a forbidden name, or of a name not allowed."""
    found = []
    for path in sorted((root / package).rglob("*.py")):
        for name in sorted(imported(path, package)):
            if (forbidden is not None and name in forbidden) or (
                    allowed is not None and name not in allowed):
                found.append(f"{path.relative_to(root)}: {name}")
    return found


def test_the_parts_the_rules_name_exist():
    assert {"trainer_service", "generator_service", "auth_service", "prompt_service"} <= SERVICES
    for package in [*FORBIDDEN, "contracts"]:
        assert (ROOT / package).is_dir(), package


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down_only(package):
    assert violations(package, forbidden=FORBIDDEN[package]) == []


def test_terra_rooms_import_only_the_rooms_below_them():
    assert {path.name for path in (ROOT / "terra").iterdir() if path.is_dir()
            and (path / "__init__.py").exists()} == set(ROOMS)
    assert room_violations() == []


def test_every_room_says_what_lives_there_and_what_it_may_import():
    for room in ROOMS:
        doc = ast.get_docstring(ast.parse((ROOT / "terra" / room / "__init__.py").read_text()))
        assert doc and "May import" in doc, room


def test_a_room_that_imports_up_is_found(tmp_path):
    """The room check itself: the floor importing a room, a room importing one above it."""
    for room in ROOMS:
        (tmp_path / "terra" / room).mkdir(parents=True)
    (tmp_path / "terra" / "settings.py").write_text("from terra.nats.connection import x\n")
    (tmp_path / "terra" / "nats" / "ok.py").write_text("from terra.errors import E\n")
    (tmp_path / "terra" / "records" / "up.py").write_text(
        "def f():\n    from terra import jobs\n")
    (tmp_path / "terra" / "ops" / "down.py").write_text("import terra.jobs.store\n")
    assert room_violations(tmp_path) == ["terra/records/up.py: terra.jobs",
                                         "terra/settings.py: terra.nats.connection"]


def test_contracts_import_pydantic_and_the_standard_library_only():
    assert violations("contracts", allowed=CONTRACTS_MAY_IMPORT) == []


def test_a_forbidden_import_is_found_wherever_it_hides(tmp_path):
    """The check itself: an import inside a function, a relative one, a dotted one."""
    package = tmp_path / "generator_service"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "ok.py").write_text("from . import sibling\nimport torch.nn\n")
    (package / "bad.py").write_text(
        "def load():\n    from trainer_service.training import train_lora\n")
    (package / "worse.py").write_text("import tests.unit.test_fluxkit as t\n")
    assert violations("generator_service", forbidden=FORBIDDEN["generator_service"],
                      root=tmp_path) == ["generator_service/bad.py: trainer_service",
                                         "generator_service/worse.py: tests"]
    assert violations("generator_service", allowed=CONTRACTS_MAY_IMPORT, root=tmp_path) == [
        "generator_service/bad.py: trainer_service", "generator_service/ok.py: generator_service",
        "generator_service/ok.py: torch", "generator_service/worse.py: tests"]
