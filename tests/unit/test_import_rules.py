"""Who may import whom (ARCHITECTURE.md, "Parts and arrows"), read from the source with
`ast`: every import statement counts, the ones inside functions too.

- services never import each other (they meet on NATS, through `contracts/`);
- the gateway and `terra/` import no service; the gateway no ML library and no `fluxkit/`;
- `fluxkit/` imports no service, no `terra/` and no broker;
- `contracts/` imports pydantic and the standard library only;
- nothing outside `tests/` imports `tests/` (`bench/` included).
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
CODE = frozenset({"tests", "bench"})  # imports nothing of these but themselves

FORBIDDEN: dict[str, frozenset[str]] = {
    **{service: SERVICES - {service} | {"gateway"} | CODE for service in SERVICES},
    "gateway": SERVICES | ML | CODE,
    "terra": SERVICES | {"gateway", "fluxkit"} | CODE,
    "fluxkit": SERVICES | {"terra", "gateway"} | BROKER | CODE,
    "bench": frozenset({"tests"}),
}
CONTRACTS_MAY_IMPORT = frozenset({"contracts", "pydantic"}) | sys.stdlib_module_names


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
