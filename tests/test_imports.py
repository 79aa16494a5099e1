"""The package's import structure, read from the source: the library never imports the CLI,
and no module imports itself in a circle (function-level imports included, since a lazy import
that closes a cycle only hides it until the function runs)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "widthsearch"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _called(node: ast.Call) -> str | None:
    return getattr(node.func, "attr", getattr(node.func, "id", None))


def absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from ... import`` names, relative imports (``from ..errors``) resolved."""
    if not node.level:
        return node.module
    base = module.split(".")
    base = base[: len(base) - (node.level - 1 if is_package else node.level)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_names(path: Path, module: str = "", is_package: bool = False) -> list[str]:
    """Every module named by an import statement or an ``import_module("...")`` call in ``path``
    (the source of ``module``); ``from a.b import c`` yields ``a.b`` and ``a.b.c`` (c may be a
    submodule)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = absolute(node, module, is_package)
            names += [source] + [f"{source}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and _called(node) == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.append(arg.value)
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                names.append(str(arg.values[0].value).rstrip("."))  # f"widthsearch.cli.{name}"
    return names


def sources() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_cli(name: str) -> bool:
    # ``python -m widthsearch`` (widthsearch/__main__.py) is the command line's entry point
    return name in ("widthsearch.cli", "widthsearch.__main__") or name.startswith("widthsearch.cli.")


def test_only_the_cli_imports_the_cli():
    offenders = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for module, path in sources().items() if not is_cli(module)
        for name in imported_names(path, module, path.name == "__init__.py") if is_cli(name)
    ]
    assert not offenders, "library code must not import the CLI: " + "; ".join(offenders)


def test_no_import_cycles():
    mods = sources()
    graph = {m: sorted({n for n in imported_names(p, m, p.name == "__init__.py") if n in mods and n != m})
             for m, p in mods.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str):
        state[m] = 1
        path.append(m)
        for n in graph[m]:
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in graph:
        if m not in state and (cycle := visit(m)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_checks_see_the_imports_they_guard(tmp_path):
    """The scanner finds lazy, aliased and import_module imports (so the tests above can fail)."""
    f = tmp_path / "m.py"
    f.write_text("import os.path as p\nfrom ..errors import UserError\ndef f():\n"
                 "    from widthsearch.cli.search import search_meta\n"
                 "    importlib.import_module(f'widthsearch.cli.{x}')\n")
    assert imported_names(f, "widthsearch.models.m") == [
        "os.path", "widthsearch.errors", "widthsearch.errors.UserError", "widthsearch.cli.search",
        "widthsearch.cli.search.search_meta", "widthsearch.cli"]
