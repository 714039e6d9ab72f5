"""Packaging and layering: what `import wuremote` loads, and who may import whom.

The lab (wuremote.lab) is an extra (`pip install 'wuremote[lab]'`): the controller must
import without psrpcore or trustme.  The import-graph rules keep the lab liftable (it
depends on wuremote.contract alone) and the contract at the bottom of the graph.  The
graph is read from the source with ast, so it sees imports inside functions and under
TYPE_CHECKING as well as module-level ones.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "wuremote"

# Folder (package) -> the folders its modules may import from.  A folder without an
# entry is not constrained yet; add a line here as a package gets its own rule.
# The README's "Layout" section says the same in words.
ALLOWED_IMPORTS: dict[str, frozenset[str]] = {
    "wuremote.contract": frozenset({"wuremote.contract"}),
    "wuremote.lab": frozenset({"wuremote.lab", "wuremote.contract"}),
    "wuremote.secret": frozenset({"wuremote.secret"}),
    "wuremote.events": frozenset({"wuremote.events", "wuremote.contract"}),
    "wuremote.transport": frozenset({"wuremote.transport", "wuremote.contract", "wuremote.secret"}),
    "wuremote.inventory": frozenset({"wuremote.inventory", "wuremote.contract", "wuremote.secret",
                                     "wuremote.transport.connection", "wuremote.transport"}),
    "wuremote.store": frozenset({"wuremote.store", "wuremote.events", "wuremote.contract", "wuremote.secret"}),
    "wuremote.output": frozenset({"wuremote.output", "wuremote.events", "wuremote.contract", "wuremote.store"}),
    "wuremote.engine": frozenset({"wuremote.engine", "wuremote.contract", "wuremote.events", "wuremote.inventory",
                                  "wuremote.transport", "wuremote.store", "wuremote.output", "wuremote.secret",
                                  "wuremote._version"}),
}

# Only the lab extra brings these; the controller must never import them.
LAB_ONLY_DISTRIBUTIONS = ("psrpcore", "trustme")


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported wuremote module, dotted
    line: int
    where: str  # "module", "function" or "type-checking"

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line}, {self.where})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement with where it runs: module level, in a function, or for type checkers only."""
    found: list[tuple[ast.Import | ast.ImportFrom, str]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, where))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, "type-checking" if where == "type-checking" else "function")
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), "type-checking")
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), where)
            else:
                visit(child, where)

    visit(tree, "module")
    return found


def _resolve(source: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: set[str]) -> list[str]:
    """The wuremote modules one import statement loads (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "wuremote"]
    if node.level:
        package = source.split(".") if is_package else source.split(".")[:-1]
        base_parts = package[: len(package) - (node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] != "wuremote":
        return []
    targets = []
    submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
    # `from . import x` names submodules; `from .x import y` loads x (and y too if it is a submodule).
    if node.module or len(submodules) < len(node.names):
        targets.append(base)
    targets.extend(submodules)
    return targets


def import_graph() -> list[Edge]:
    modules = all_modules()
    names = set(modules)
    edges = []
    for source, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, where in _imports(tree):
            for target in _resolve(source, path.name == "__init__.py", node, names):
                if target != source:
                    edges.append(Edge(source, target, node.lineno, where))
    return edges


def _in_folder(module: str, folder: str) -> bool:
    return module == folder or module.startswith(folder + ".")


def _folder_rule(module: str) -> tuple[str, frozenset[str]] | None:
    matches = [folder for folder in ALLOWED_IMPORTS if _in_folder(module, folder)]
    if not matches:
        return None
    folder = max(matches, key=len)  # the most specific rule wins
    return folder, ALLOWED_IMPORTS[folder]


def find_cycle(edges: list[Edge]) -> list[str] | None:
    """One import cycle (as a closed path of modules), or None."""
    graph: dict[str, list[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, []).append(edge.target)
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(set(graph.get(node, ()))):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = dfs(start)
            if cycle:
                return cycle
    return None


# --- the tests -----------------------------------------------------------------------------
def test_import_wuremote_and_cli_loads_no_lab_dependency() -> None:
    code = textwrap.dedent(f"""
        import sys
        import wuremote
        import wuremote.cli
        wuremote.cli.build_parser()  # the `lab` subcommand's options come from wuremote.lab.__main__
        loaded = [name for name in {LAB_ONLY_DISTRIBUTIONS!r} if name in sys.modules]
        assert not loaded, f"importing wuremote and building the CLI parser loaded {{loaded}}"
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=PACKAGE_ROOT.parent)
    assert result.returncode == 0, result.stderr



@pytest.mark.parametrize("command", [["demo"], ["lab", "--hosts", "1"]])
def test_without_the_lab_extra_demo_and_lab_say_how_to_install_it(command: list[str]) -> None:
    # A None entry in sys.modules is what an absent distribution looks like to find_spec and import.
    code = textwrap.dedent(f"""
        import sys
        for name in {LAB_ONLY_DISTRIBUTIONS!r}:
            sys.modules[name] = None
        from wuremote.cli import main
        sys.exit(main({command!r}))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=PACKAGE_ROOT.parent)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'wuremote[lab]'" in lines[0] and "psrpcore" in lines[0], lines[0]

def test_the_graph_sees_every_kind_of_import() -> None:
    edges = import_graph()
    kinds = {edge.where for edge in edges}
    assert {"module", "function"} <= kinds, kinds
    assert any(e.source == "wuremote.cli" and e.target == "wuremote.lab.__main__" and e.where == "function"
               for e in edges)
    assert any(e.source == "wuremote.lab.faults" and e.target == "wuremote.contract.scripts" for e in edges)


@pytest.mark.parametrize("folder", sorted(ALLOWED_IMPORTS))
def test_folder_imports_only_what_its_rule_allows(folder: str) -> None:
    broken = []
    for edge in import_graph():
        rule = _folder_rule(edge.source)
        if rule is None or rule[0] != folder:
            continue
        if not any(_in_folder(edge.target, allowed) for allowed in rule[1]):
            broken.append(str(edge))
    assert not broken, (f"{folder} may import only {sorted(ALLOWED_IMPORTS[folder])}, but:\n  "
                        + "\n  ".join(broken))


def test_no_import_cycle_at_module_level() -> None:
    edges = [edge for edge in import_graph() if edge.where == "module"]
    cycle = find_cycle(edges)
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_among_controller_modules_counting_function_imports() -> None:
    # The lab is left out: its cmd.exe and powershell.exe run each other (lab.pwsh -> lab.cmd ->
    # lab.console -> lab.pwsh), by design and through imports deferred into functions.
    edges = [edge for edge in import_graph() if edge.where in ("module", "function")
             and not _in_folder(edge.source, "wuremote.lab") and not _in_folder(edge.target, "wuremote.lab")]
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle (module or function level): " + " -> ".join(cycle or [])


def test_every_public_name_resolves_and_type_checkers_see_it() -> None:
    import wuremote

    for name in wuremote.__all__:
        assert getattr(wuremote, name) is not None, name
    assert wuremote.StepResult is __import__("wuremote.contract", fromlist=["StepResult"]).StepResult
    # The TYPE_CHECKING block imports exactly the lazily exported names, from the same modules.
    tree = ast.parse((PACKAGE_ROOT / "__init__.py").read_text(encoding="utf-8"))
    seen = {}
    for node, where in _imports(tree):
        if where == "type-checking" and isinstance(node, ast.ImportFrom) and node.level == 1:
            seen.update({alias.asname or alias.name: node.module for alias in node.names})
    assert seen == wuremote._EXPORTS


def test_py_typed_ships() -> None:
    assert (PACKAGE_ROOT / "py.typed").is_file()
    text = (PACKAGE_ROOT.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert '"py.typed"' in text
