"""Data flows one way (DESIGN.md §2): each package may import only what lies upstream of it.

Read with ``ast`` (nothing is imported), so a forbidden import anywhere in a module, even
inside a function, is caught.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"canonical", "connectors", "sync", "compare", "sandbox", "erphub"}

# package -> our packages it may import
ALLOWED: dict[str, set[str]] = {
    "canonical": set(),
    "connectors": {"canonical"},
    "sync": {"canonical", "connectors"},
    "compare": {"canonical", "connectors", "sync"},
    "sandbox": set(),  # the vendors' world shares no code with the clients it tests
    "erphub": {"canonical", "connectors", "sync", "compare"},
}
# The production modules that may start the simulators: the CLI (`erphub sandbox up`) and the demo.
SANDBOX_ALLOWED_IN = {"erphub/cli.py", "erphub/commands/demo.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


def _modules() -> list[tuple[str, Path]]:
    return [(package, path) for package in sorted(ALLOWED) for path in sorted((ROOT / package).rglob("*.py"))]


@pytest.mark.parametrize(("package", "path"), _modules(), ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else v)
def test_imports_flow_one_way(package: str, path: Path) -> None:
    relative = path.relative_to(ROOT).as_posix()
    allowed = ALLOWED[package] | {package}
    if relative in SANDBOX_ALLOWED_IN:
        allowed = allowed | {"sandbox"}
    forbidden = _imports(path) - allowed
    assert not forbidden, f"{relative} imports {sorted(forbidden)}; {package} may import only {sorted(allowed)}"


def test_the_checker_sees_a_backward_import(tmp_path: Path) -> None:
    # Given a module that imports the engine from inside a function
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from sync.store import Store\n    import compare.variance\n", encoding="utf-8")
    # Then both imports are found
    assert _imports(module) == {"sync", "compare"}
