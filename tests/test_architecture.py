"""The import rules of docs/architecture.md, checked on every import statement of the package sources (lazy
imports inside functions included) and, for the torch-free packages, by importing them in a fresh interpreter."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LIBRARIES = ("dataio", "simcse", "mining", "curriculum")
PRODUCT = (*LIBRARIES, "flows")
TORCH = ("torch", "transformers", "sentence_transformers")
# mining uses simcse for the encoder only: loading a SimCSEEncoder.
MINING_ENCODER_MODULES = {"mining/encoders.py"}


def imports(package: str) -> list[tuple[str, int, str]]:
    """(file relative to the repository, line, top-level module imported) of every import in `package`."""
    folder = REPO / package
    assert folder.is_dir(), f"package {package}/ is missing"
    out = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out += [(path.relative_to(REPO).as_posix(), node.lineno, a.name.split(".")[0]) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                out.append((path.relative_to(REPO).as_posix(), node.lineno, node.module.split(".")[0]))
    return out


def offending(package: str, forbidden: tuple[str, ...], allowed_in: set[str] = frozenset()) -> list[str]:
    return [f"{f}:{line} imports {module}" for f, line, module in imports(package)
            if module in forbidden and f not in allowed_in]


def fresh_python(code: str) -> str:
    """What `code` prints in a fresh interpreter of this checkout (stripped); its failure fails the test."""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


@pytest.mark.parametrize("package", LIBRARIES)
def test_libraries_never_import_prefect_or_flows(package: str) -> None:
    assert offending(package, ("prefect", "flows", "bench")) == []


@pytest.mark.parametrize("package", PRODUCT)
def test_the_product_never_imports_bench(package: str) -> None:
    """bench/ measures the product and may import all of it; nothing in the product imports bench."""
    assert offending(package, ("bench",)) == []


def test_bench_is_a_package_run_as_modules() -> None:
    """bench/ is a package (`python -m bench.<name>`): its modules import each other as `bench.<name>`, never by
    a bare name that only resolves with bench/ itself on the path, and none edits `sys.path`."""
    folder = REPO / "bench"
    assert (folder / "__init__.py").is_file()
    names = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    bare = [f"{f}:{line} imports {module}" for f, line, module in imports("bench") if module in names]
    assert bare == []
    edits = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "path" and \
                    isinstance(node.value, ast.Name) and node.value.id == "sys":
                edits.append(f"{path.relative_to(REPO).as_posix()}:{node.lineno} uses sys.path")
    assert edits == []


# The settings models a run config embeds: validating a config or building a command's options loads no torch.
SETTINGS_MODULES = ("mining/params.py", "simcse/train_config.py")


@pytest.mark.parametrize("package", ["curriculum", "dataio"])
def test_curriculum_and_dataio_need_no_torch(package: str) -> None:
    assert offending(package, TORCH) == []


def test_the_settings_models_need_no_torch() -> None:
    for module in SETTINGS_MODULES:
        assert (REPO / module).is_file(), f"{module} is missing"
        package = module.split("/")[0]
        assert [f for f in offending(package, TORCH) if f.startswith(module + ":")] == []


def test_dataio_imports_no_package_of_ours() -> None:
    assert offending("dataio", ("simcse", "mining", "curriculum", "flows", "bench")) == []


def test_mining_uses_simcse_for_the_encoder_only() -> None:
    assert offending("mining", ("simcse",), allowed_in=MINING_ENCODER_MODULES) == []
    assert offending("mining", ("curriculum",)) == []


def test_simcse_and_curriculum_stay_apart_from_the_packages_above_them() -> None:
    assert offending("simcse", ("mining", "curriculum")) == []
    assert offending("curriculum", ("simcse", "mining")) == []


def test_torch_free_packages_import_without_torch_or_prefect() -> None:
    """Importing every module of curriculum and dataio loads neither torch nor prefect (nothing they import
    drags them in either)."""
    modules = [p.relative_to(REPO).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
               for package in ("curriculum", "dataio") for p in sorted((REPO / package).rglob("*.py"))]
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "loaded = sorted(m for m in ('torch', 'transformers', 'prefect', 'flows', 'simcse', 'mining') "
            "if m in sys.modules)\n"
            "print(','.join(loaded))\n")
    assert fresh_python(code) == ""


def test_settings_and_the_run_config_load_without_torch_or_prefect() -> None:
    """mining's and simcse's settings models, and flows' run config that embeds them, import in a fresh
    interpreter without torch, transformers or prefect: `validate` and `--help` stay light."""
    modules = [m.removesuffix(".py").replace("/", ".") for m in SETTINGS_MODULES] + ["flows.run.config"]
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(','.join(sorted(m for m in ('torch', 'transformers', 'prefect') if m in sys.modules)))\n")
    assert fresh_python(code) == ""


# ---------------------------------------------------------------------------------------- import circles
PACKAGES = ("dataio", "simcse", "mining", "curriculum", "flows", "bench")


def module_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the modules of `packages` it imports, counting every import: top-level, inside functions, under
    TYPE_CHECKING and relative ones (a circle a lazy import hides is still a circle of the design)."""
    files = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path

    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                edges |= {known(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1]) if node.level else ""
                module = ".".join(p for p in (base, node.module or "") if p)
                edges.add(known(module))
                edges |= {known(f"{module}.{a.name}") for a in node.names}
        graph[name] = {e for e in edges if e is not None and e != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_check_finds_a_circle_a_lazy_import_hides(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import B\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from . import c\n")
    (tmp_path / "pkg" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n")
    (tmp_path / "pkg" / "d.py").write_text("import pkg.a\n")
    assert circles(module_graph(tmp_path, ("pkg",))) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_no_import_circles_between_modules() -> None:
    assert circles(module_graph(REPO, PACKAGES)) == []


# ---------------------------------------------------------------------------------------- flows' rooms
# docs/architecture.md: flows/ in rooms by job, each importing only the rooms before it in this order.
FLOWS_ROOMS = ("run", "registry", "rounds", "orchestration", "cli")
# The one module left at flows/'s top: where deployments registered before the rooms find the scheduled flow.
FLOWS_TOP = ["__init__.py", "curriculum_flow.py"]


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "flows" and parts[1] in FLOWS_ROOMS else None


def test_flows_modules_live_in_rooms() -> None:
    folder = REPO / "flows"
    assert sorted(p.name for p in folder.glob("*.py")) == FLOWS_TOP
    assert sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(FLOWS_ROOMS)
    assert all((folder / room / "__init__.py").is_file() for room in FLOWS_ROOMS)


def upward_imports(root: Path) -> list[str]:
    """`a imports b` for every import (lazy ones too) of a flows room from a room after it in FLOWS_ROOMS."""
    return [f"{module} imports {target}" for module, targets in module_graph(root, ("flows",)).items()
            if (here := room_of(module)) is not None for target in sorted(targets)
            if (there := room_of(target)) is not None and FLOWS_ROOMS.index(there) > FLOWS_ROOMS.index(here)]


def test_flows_rooms_import_only_the_rooms_before_them() -> None:
    assert upward_imports(REPO) == []


def test_the_room_check_finds_an_upward_import(tmp_path: Path) -> None:
    for folder in ("flows", "flows/run", "flows/cli"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "flows" / "cli" / "app.py").write_text("from flows.run import config\n")  # downward: allowed
    (tmp_path / "flows" / "run" / "config.py").write_text("def f():\n    from flows.cli import app\n")
    assert upward_imports(tmp_path) == ["flows.run.config imports flows.cli", "flows.run.config imports flows.cli.app"]


def test_only_the_prefect_layer_and_the_cli_import_prefect() -> None:
    allowed = {f for f, _, _ in imports("flows") if f.startswith(("flows/orchestration/", "flows/cli/"))}
    assert offending("flows", ("prefect",), allowed) == []


@pytest.mark.parametrize("package", PRODUCT)
def test_only_the_registry_imports_mlflow(package: str) -> None:
    allowed = {f for f, _, _ in imports(package) if f.startswith("flows/registry/")}
    assert offending(package, ("mlflow",), allowed) == []


# Our own modules flows may import inside a function: the ones that load torch or Prefect when imported.
LAZY_OWN = ("simcse.train", "simcse.model", "simcse.distill", "simcse.runtimes", "flows.orchestration.curriculum_flow",
            "flows.orchestration.tasks")


def lazy_imports(package: str) -> list[tuple[str, int, str, bool]]:
    """(file, line, module, has a reason) of every import inside a function or block of `package`; the reason is a
    comment on the import's line or the line above."""
    out = []
    for path in sorted((REPO / package).rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        tree = ast.parse(source, str(path))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if isinstance(node, ast.ImportFrom) and module and (REPO / module.replace(".", "/") /
                                                                    f"{node.names[0].name}.py").is_file():
                    module = f"{module}.{node.names[0].name}"  # `from package import module`: the module
                reason = "#" in lines[node.end_lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
                out.append((path.relative_to(REPO).as_posix(), node.lineno, module or "", reason))
    return out


def test_flows_imports_its_own_modules_at_the_top_and_says_why_of_each_lazy_import() -> None:
    """docs/architecture.md: our own imports at the top of a file; inside a function only what loads torch or
    Prefect (or MLflow, matplotlib, an optional package), each with its one-line reason."""
    found = lazy_imports("flows")
    own = [f"{f}:{line} imports {m}" for f, line, m, _ in found
           if m.split(".")[0] in (*LIBRARIES, "flows") and not m.startswith(LAZY_OWN)
           and not f.startswith("flows/cli/")]  # a command imports its implementation when it runs
    unexplained = [f"{f}:{line} imports {m}" for f, line, m, reason in found if not reason]
    assert own == [] and unexplained == []


def test_the_command_line_imports_without_prefect_torch_or_mlflow() -> None:
    """The CLI sets Prefect's home and logging before Prefect is imported (flows.orchestration.prefect_env), and
    `--help`, `validate`, `init` and `models path` need none of the three: importing the app loads none of them,
    nor pyarrow, nor any command's implementation (the rounds' and the registry's modules load when a command
    that needs them runs)."""
    code = ("import sys, flows.cli.app; "
            "print(sorted(m for m in sys.modules if m in ('prefect', 'torch', 'mlflow', 'transformers', 'pyarrow') "
            "or m.startswith(('flows.rounds.', 'flows.registry.'))))")
    assert fresh_python(code) == "[]"


def test_the_curriculum_package_loads_each_name_on_first_use() -> None:
    """`curriculum/__init__.py` exports every public name but loads a name's module on first use: a config check
    (`curriculum.config`) needs neither the sampler's pyarrow nor the mixture's numpy, and every name in
    `__all__` still resolves to the object its home module defines."""
    code = ("import sys, importlib, curriculum.config; heavy = sorted(m for m in ('pyarrow', 'numpy', 'matplotlib') "
            "if m in sys.modules); import curriculum; "
            "wrong = [n for n in curriculum.__all__ if getattr(curriculum, n) is not "
            "getattr(importlib.import_module(curriculum._HOMES[n]), n)]; "
            "missing = sorted(set(curriculum._HOMES) ^ set(curriculum.__all__)); print(heavy, wrong, missing)")
    assert fresh_python(code) == "[] [] []"
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        import curriculum

        _ = curriculum.nothing_here


def test_no_product_function_takes_a_logger_to_pass_along() -> None:
    """Issue 25: the steps log with Python's logging (the `flows` logger); the Prefect layer makes those lines the
    run's (flows.orchestration.tasks.run_logging). A `log` parameter threaded from call to call does not come back."""
    found = []
    for package in PRODUCT:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    args = node.args
                    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                    found += [f"{path.relative_to(REPO).as_posix()}:{node.lineno} {node.name}({n})"
                              for n in names if n in ("log", "logger")]
    assert found == []
