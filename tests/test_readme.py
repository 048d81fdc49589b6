"""A README command is a test too: the set-up commands, the Python API block, `make run`, the CLI."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.ui_server import child_env

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LECTERN = Path(sys.executable).with_name("lectern")

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def blocks() -> list[tuple[str, str]]:
    """(language, body) of every fenced block of the README, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(README)]


def commands(body: str) -> list[list[str]]:
    """The shell commands of a block, comments dropped, each split like the shell would."""
    return [argv for line in body.splitlines() if (argv := shlex.split(line, comments=True))]


def api_block() -> str:
    """The ```python block right after the `<!-- readme-test` marker."""
    start = README.index("<!-- readme-test")
    match = FENCE.search(README, start)
    assert match is not None and match.group(1) == "python", "no ```python block after <!-- readme-test"
    between = README[start : match.start()]
    assert between.count("\n") == 1, "the python block must follow the <!-- readme-test comment directly"
    return match.group(2)


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without the caller's LECTERN_* settings, rooted in data_dir."""
    env = child_env()
    env.update(LECTERN_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="250")
    env.update(extra)
    return env


def make_recipe(target: str) -> list[str]:
    result = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"make -n {target}:\n{result.stdout}\n{result.stderr}"
    return result.stdout.splitlines()


def run_script(
    body: str, tmp_path: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run the block as a user would: saved to a script file, run from the repository root."""
    script = tmp_path / "readme_api.py"
    script.write_text(body, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


# -- the two set-up commands --------------------------------------------------------------------------
def test_first_block_is_make_run_and_make_test() -> None:
    lang, body = blocks()[0]
    assert lang in ("bash", "sh", "shell", "console", "")
    assert commands(body) == [["make", "run"], ["make", "test"]]


@needs_make
@pytest.mark.parametrize("target", ["run", "test"])
def test_make_targets_exist(target: str) -> None:
    make_recipe(target)  # -n only: prints the recipe, runs nothing


def test_ci_calls_make_test() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ["make", "test"] in commands(ci)


# -- the Python API block -----------------------------------------------------------------------------
def test_python_api_block_runs_with_fakes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = clean_env(data, LECTERN_LLM__BACKEND="fake", LECTERN_INGEST__EMBED__MODEL="fake")
    result = run_script(api_block(), tmp_path, env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr  # e.g. a parse worker re-running the script
    assert re.search(r"['\"]added['\"]: 1\b", result.stdout), result.stdout
    assert re.search(r"^\[1\] .*marrow_point_light\.pdf p\.\d+: ", result.stdout, re.M), result.stdout


# -- every command the README names is a real command -------------------------------------------------
def readme_commands() -> list[tuple[str, ...]]:
    """`lectern <command>` (and `lectern eval <what>`) from the "Use it" block and inline code."""
    match = FENCE.search(README, README.index("## Use it"))
    assert match is not None, 'no block under "## Use it"'
    body = match.group(2)
    argvs = [argv for argv in commands(body) if Path(argv[0]).name == "lectern"]
    argvs += [span.split() for span in re.findall(r"`(?:\.venv/bin/)?(lectern [^`]+)`", README)]
    found: list[tuple[str, ...]] = []
    for argv in argvs:
        words = [a for a in argv[1:3] if not a.startswith("-")][: 2 if argv[1:2] == ["eval"] else 1]
        if words and tuple(words) not in found:
            found.append(tuple(words))
    for required in (("eval", "retrieval"), ("eval", "answers")):
        if required not in found:
            found.append(required)
    return found


def test_use_it_block_names_commands() -> None:
    names = {c[0] for c in readme_commands()}
    assert {"ingest", "search", "ask", "chat", "summarize", "delete", "list", "eval", "ui"} <= names


@pytest.mark.parametrize("command", readme_commands(), ids=" ".join)
def test_readme_command_exists(command: tuple[str, ...], tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    result = subprocess.run(
        [str(LECTERN), *command, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"lectern {' '.join(command)} --help:\n{result.stdout}\n{result.stderr}"


# -- the module map is the tree -----------------------------------------------------------------------
MAPPED = ("lectern", "lectern/cli", "lectern/serve", "ingest", "rag", "rag/llm", "app", "app/views")


def module_map() -> dict[str, set[str]]:
    """{folder: module file names} from the ```text block after `<!-- readme-test: module-map`:
    a line that starts with `folder/` opens that folder, and every `name.py` after it is one of its."""
    start = README.index("<!-- readme-test: module-map")
    match = FENCE.search(README, start)
    assert match is not None and match.group(1) == "text", "no ```text block after the module-map marker"
    found: dict[str, set[str]] = {}
    folder = ""
    for line in match.group(2).splitlines():
        first = line.split(maxsplit=1)[0] if line.strip() else ""
        if not line[:1].isspace() and first.endswith("/"):
            folder = first.rstrip("/")
            found.setdefault(folder, set())
        found[folder].update(re.findall(r"\b([a-z_0-9]+\.py)\b", line))
    return found


def test_the_module_map_covers_the_packages() -> None:
    assert set(module_map()) == set(MAPPED)


@pytest.mark.parametrize("folder", MAPPED)
def test_the_module_map_names_every_module_and_only_real_ones(folder: str) -> None:
    named = module_map()[folder]
    on_disk = {p.name for p in (ROOT / folder).glob("*.py")}
    assert named - on_disk == set(), f"the README's module map names modules {folder}/ does not have"
    assert on_disk - named - {"__init__.py"} == set(), (
        f"the README's module map leaves out modules of {folder}/"
    )


def test_the_readme_links_to_docs_that_exist() -> None:
    links = re.findall(r"\]\((docs/[^)#]*)\)", README)
    assert links, "the README links no docs"
    assert [link for link in links if not (ROOT / link).exists()] == []
