"""DESIGN.md section 5, held against the code: every module's imports (at the top, inside a
function or for type checking alike) flow down the layers and never in a circle, each
third-party library is imported in its home package alone, the plan is pure, only cli/
prints, and every __init__.py is empty."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "novaproc"
LAYERS = {"errors": 0, "messages": 0, "fsio": 0, "inputs": 1, "planning": 2, "locking": 2, "state": 2,
          "execution": 3, "isolation": 3, "run": 4, "cli": 5, "__main__": 6}
HOMES = {"portalocker": "locking", "git": "isolation", "rich": "cli", "pydantic": "inputs",
         "annotated_types": "inputs", "psutil": "execution", "distributed": "execution",
         "dask": "execution", "tomli_w": "cli"}
IMPURE = {"os", "subprocess", "multiprocessing", "threading", "signal", "socket", "shutil", "tempfile"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, dotted
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> Iterator[Import]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (Import(name, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # a name may be a module or a function: owner_module tells them apart where it matters
            yield from (Import(name, f"{base}.{alias.name}", node.lineno) for alias in node.names)


def group(dotted: str) -> str:
    """The layer-table entry a novaproc module belongs to: its folder, or itself at the top
    ("" for the package itself)."""
    return dotted.split(".")[1] if "." in dotted else ""


MODULES = sorted(PACKAGE.rglob("*.py"))
ALL = [imp for path in MODULES for imp in imports_of(path)]
OURS = [imp for imp in ALL if imp.target.split(".")[0] == "novaproc" and imp.target != "novaproc"]


def test_every_module_sits_in_a_layer_of_the_table() -> None:
    stray = {group(module_name(p)) for p in MODULES} - {""}
    assert stray <= set(LAYERS), f"not in DESIGN.md section 5's table: {sorted(stray - set(LAYERS))}"


def test_imports_flow_down_the_layers() -> None:
    upward = [f"{i.module}:{i.line} imports {i.target}" for i in OURS
              if LAYERS[group(i.target)] > LAYERS[group(i.module)]
              or (group(i.target) == "cli" and group(i.module) != "cli" and group(i.module) != "__main__")]
    assert not upward, "\n".join(upward)


def test_no_module_and_no_package_imports_in_a_circle() -> None:
    for level in (module_level, package_level):
        graph: dict[str, set[str]] = {}
        for imp in OURS:
            here, there = level(imp.module), level(owner_module(imp.target))
            if here != there:
                graph.setdefault(here, set()).add(there)
        try:
            TopologicalSorter(graph).prepare()
        except CycleError as e:
            pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def owner_module(target: str) -> str:
    """The module `target` names, or the module a name imported from it lives in."""
    path = PACKAGE.parent / target.replace(".", "/")
    return target if path.with_suffix(".py").is_file() or path.is_dir() else target.rpartition(".")[0]


def module_level(dotted: str) -> str:
    return dotted


def package_level(dotted: str) -> str:
    return group(dotted)


def test_each_third_party_library_is_imported_in_its_home_alone() -> None:
    strays = [f"{i.module}:{i.line} imports {i.target} (its home is {HOMES[root]}/)" for i in ALL
              if (root := i.target.split(".")[0]) in HOMES and group(i.module) != HOMES[root]]
    assert not strays, "\n".join(strays)


def test_planning_is_pure() -> None:
    impure = [f"{i.module}:{i.line} imports {i.target}" for i in ALL if group(i.module) == "planning"
              and (i.target.split(".")[0] in IMPURE | set(HOMES)
                   or (i.target.startswith("novaproc.") and group(i.target) not in ("inputs", "planning",
                                                                                    "errors", "messages")))]
    assert not impure, "\n".join(impure)


def test_only_the_cli_prints() -> None:
    below = [p for p in MODULES if group(module_name(p)) not in ("cli", "__main__")]
    printing = [f"{module_name(p)}:{node.lineno}" for p in below
                for node in ast.walk(ast.parse(p.read_text()))
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"]
    assert not printing, f"print below cli/: {printing}"


def test_init_files_are_empty() -> None:
    filled = [str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("__init__.py")
              if p.read_text().strip()]
    assert not filled, f"not empty (they would load what their package holds): {filled}"


def test_the_rules_see_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks above are only as good as the import reading: it must see each kind of import."""
    probe = tmp_path / "novaproc" / "planning" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from ..run import supervisor\nimport subprocess\n"
                     "def f():\n    from novaproc.cli.main import entry\n    import rich.console\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "novaproc")
    seen = {imp.target for imp in imports_of(probe)}
    assert seen == {"novaproc.run.supervisor", "subprocess", "novaproc.cli.main.entry", "rich.console"}
