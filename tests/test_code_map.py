"""README's code map is the import rule: every module has a row, and imports only what its
row allows (names relative to ``pipeline/``; a folder row covers its files, which may
import each other)."""

from __future__ import annotations

import ast
import re

from tests.conftest import ROOT

LIBRARY_ALL = "every library module above"


def code_map() -> dict[str, set[str] | str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Code map", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for path, allowed in re.findall(r"^\| `([^`]+)` \| [^|]+ \|([^|]*)\|$", section, re.M):
        rows[path] = allowed.strip()
    return rows


def _row_of(path: str, rows) -> str | None:
    if path in rows:
        return path
    folders = [r for r in rows if r.endswith("/") and path.startswith(r)]
    return max(folders, key=len) if folders else None


def _dotted(row: str) -> str:
    return row.rstrip("/").removesuffix(".py").replace("/", ".")


def _imports(path):
    """(imported module, name of the enclosing function or None) for project imports."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    package = parts[:-1]  # a module's package; an __init__'s is its own folder
    out = []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[:len(package) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                    targets = [mod] if child.module else [f"{mod}.{a.name}" for a in child.names]
                else:
                    targets = [child.module or ""]
                out.extend((t, func) for t in targets if t.split(".")[0] in ("pipeline", "flows"))
            elif isinstance(child, ast.Import):
                out.extend((a.name, func) for a in child.names if a.name.split(".")[0] in ("pipeline", "flows"))
            visit(child, name)

    visit(ast.parse(path.read_text()), None)
    return out


def _within(dep: str, names: set[str]) -> bool:
    return any(dep == n or dep.startswith(n + ".") for n in names)


def test_every_module_has_a_row_and_imports_only_what_it_may():
    rows = code_map()
    library = {_dotted(r) for r in rows if r.startswith("pipeline/")
               and r not in ("pipeline/app.py", "pipeline/cli/")}
    problems = []
    files = sorted(ROOT.glob("pipeline/**/*.py")) + sorted(ROOT.glob("flows/*.py"))
    for f in files:
        rel = f.relative_to(ROOT).as_posix()
        if rel == "pipeline/__init__.py":
            continue  # holds __version__ only
        row = _row_of(rel, rows)
        if row is None:
            problems.append(f"{rel}: no row in README's code map")
            continue
        allowed_text = rows[row]
        own = _dotted(row)
        if row == "flows/":
            allowed = {"pipeline", "flows"}
        elif row == "pipeline/cli/":
            allowed = library | {"pipeline.app"}
        elif allowed_text == LIBRARY_ALL:
            allowed = library
        else:
            allowed = {f"pipeline.{n.strip()}" for n in allowed_text.split(",") if n.strip()}
        allowed |= {own, "pipeline.__version__"}
        for dep, func in _imports(f):
            if row == "pipeline/cli/" and dep.startswith("flows"):
                if func not in ("run", "serve", "deploy"):
                    problems.append(f"{rel}: imports {dep} outside run/serve/deploy")
                continue
            if not _within(dep, allowed):
                problems.append(f"{rel}: imports {dep}, not in its row ({allowed_text or 'nothing'})")
    assert not problems, "\n".join(problems)


def test_code_map_rows_name_real_modules():
    for row in code_map():
        assert (ROOT / row).exists(), f"README code map names {row}, which does not exist"
