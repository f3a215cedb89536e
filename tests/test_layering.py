"""The rooms import one way only (docs/architecture.md):

    models/   (imported by app only)
    store/  ← hooks/, analysis/  ← app/

`store` imports nothing of ours; `hooks` never imports `models`, `analysis` or `app`; `analysis` never
imports `hooks`, `models` or `app`; `models` imports nothing of the workbench. Every `.py` file is parsed
(no imports run): module-level and function-level imports, `TYPE_CHECKING` blocks, literal
`importlib.import_module(...)` strings and the relative module names given to `lazy_attributes`.

Run as a script (`python tests/test_layering.py`) it prints every edge that runs against the flow.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ROOMS = {  # folder → import name (pyproject's package-dir)
    "store": "routescope.store",
    "hooks": "routescope.hooks",
    "analysis": "routescope.analysis",
    "models": "routescope.models",
    "app": "routescope",
}

FORBIDDEN = {
    "store": {"hooks", "analysis", "models", "app"},
    "hooks": {"models", "analysis", "app"},
    "analysis": {"hooks", "models", "app"},
    "models": {"store", "hooks", "analysis", "app"},
    "app": set(),
}


def room_of(module: str) -> str | None:
    """The room a fully qualified module name belongs to; None outside `routescope`."""
    if module != "routescope" and not module.startswith("routescope."):
        return None
    for room in ("store", "hooks", "analysis", "models"):
        prefix = ROOMS[room]
        if module == prefix or module.startswith(prefix + "."):
            return room
    return "app"


def module_name(folder: str, path: Path) -> tuple[str, str]:
    """(module, package) of a file inside a room's folder."""
    parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    module = ".".join([ROOMS[folder], *parts])
    package = module if is_package else module.rpartition(".")[0]
    return module, package


def resolve(name: str, level: int, package: str) -> str:
    if level == 0:
        return name
    base = package.split(".")
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join([*base, name] if name else base)


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _relative(text: str, package: str) -> str:
    level = len(text) - len(text.lstrip("."))
    return resolve(text[level:], level, package)


def imports(tree: ast.Module, package: str) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import the file can make."""
    dicts: dict[str, ast.Dict] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    dicts[target.id] = node.value
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = resolve(node.module or "", node.level, package)
            if node.module is None:  # from . import x: x may be a submodule
                for alias in node.names:
                    yield node.lineno, f"{base}.{alias.name}"
            else:
                yield node.lineno, base
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "import_module" and node.args:
                text = _literal(node.args[0])
                anchor = _literal(node.args[1]) if len(node.args) > 1 else None
                if text is not None:
                    yield node.lineno, _relative(text, anchor or package) if text.startswith(".") else text
            elif name == "lazy_attributes" and len(node.args) > 1:
                table = node.args[1]
                if isinstance(table, ast.Name):
                    table = dicts.get(table.id, table)
                if isinstance(table, ast.Dict):
                    for value in table.values:
                        text = _literal(value)
                        if text is not None:
                            yield node.lineno, _relative(text, package)


def violations(root: Path = ROOT) -> list[str]:
    """Every import edge that runs against the flow, as `file:line room → module (room)`."""
    found = []
    for folder in ROOMS:
        if not (root / folder).is_dir():
            continue
        for path in sorted((root / folder).rglob("*.py")):
            _, package = module_name(folder, path)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, target in imports(tree, package):
                room = room_of(target)
                if room is not None and room in FORBIDDEN[folder]:
                    where = path.relative_to(root)
                    found.append(f"{where}:{line} {folder} → {target} ({room})")
    return found


def test_imports_run_with_the_flow() -> None:
    found = violations()
    assert not found, "imports against the flow (docs/architecture.md):\n" + "\n".join(found)


def test_checker_sees_lazy_and_relative_imports() -> None:
    source = (
        "from ..hooks import Run\n"
        "def f():\n"
        "    import routescope.models\n"
        "    importlib.import_module('.capture', 'routescope.hooks')\n"
        "    importlib.import_module('routescope.dashboard')\n"
        "_LAZY = {'record': '.recorder'}\n"
        "__getattr__ = lazy_attributes(__name__, _LAZY)\n"
    )
    found = sorted(target for _, target in imports(ast.parse(source), "routescope.analysis"))
    assert found == [
        "routescope.analysis.recorder",
        "routescope.dashboard",
        "routescope.hooks",
        "routescope.hooks.capture",
        "routescope.models",
    ]
    assert [room_of(name) for name in found] == ["analysis", "app", "hooks", "hooks", "models"]


if __name__ == "__main__":
    edges = violations()
    print("\n".join(edges))
    print(f"{len(edges)} import edges against the flow")
    sys.exit(1 if edges else 0)
