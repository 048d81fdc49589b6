"""Ingest speed and peak memory: lectern's profiles against the LangChain tutorial pipeline, one run.

    .venv/bin/python -m bench.ingest_speed [--docs DIR ...] [--json OUT]

Default corpus: the R manuals of Debian's r-doc-pdf, all but the reference manual. Each pipeline runs
in its own fresh process (so peak RSS is its own, models included), one after the other on the same
machine; then lectern re-ingests the unchanged corpus. Reports chunks/s, characters/s, seconds, peak
RSS and the ratios to the tutorial.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

R_MANUALS = Path("/usr/share/R/doc/manual")
SKIP = {"refman.pdf", "fullrefman.pdf"}


def corpus(dirs: list[Path]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        files.extend(sorted(p for p in d.glob("*.pdf") if p.name not in SKIP))
    return files


def run_tutorial(files: list[Path]) -> dict[str, float]:
    from bench import tutorial

    t0 = time.perf_counter()
    store, chunks = tutorial.build(files)
    seconds = time.perf_counter() - t0
    chars = sum(len(d.page_content) for d in store.docstore._dict.values())
    return {"seconds": seconds, "chunks": chunks, "chars": chars}


def run_lectern(files: list[Path], name: str, data_dir: Path, repeat: bool) -> dict[str, float]:
    """`name` is a profile, or `accurate-fp32`: MiniLM without bf16, as on CPUs that lack it."""
    from lectern.ingest.pipeline import ingest
    from lectern.rag.settings import load_settings
    from lectern.rag.workspace import shared_embedder

    settings = load_settings(data_dir=data_dir)
    profile, _, precision = name.partition("-")
    settings.ingest.embed.profile = profile  # type: ignore[assignment]
    if precision:
        settings.ingest.embed.precision = precision  # type: ignore[assignment]
    collection = data_dir / "collections" / f"bench-{name}"
    t0 = time.perf_counter()
    embedder = shared_embedder(settings.ingest.embed, settings.built_models_dir)
    report = ingest(files, collection, embedder, settings.ingest)
    seconds = time.perf_counter() - t0
    if not report.ok:
        raise SystemExit(f"failed: {[(r.path, r.reason) for r in report.failed]}")
    from lectern.ingest.store import Collection

    col = Collection.open(collection)
    chars = sum(len(r[0]) for r in col.db.execute("SELECT text FROM chunks"))
    col.close()
    out = {"seconds": seconds, "chunks": report.chunks, "chars": chars, "pages": report.pages}
    if repeat:
        t1 = time.perf_counter()
        again = ingest(files, collection, embedder, settings.ingest)
        out["reingest_seconds"] = time.perf_counter() - t1
        out["reingest_unchanged"] = len(again.unchanged)
    return out


def one(args: argparse.Namespace) -> None:
    """Child process: run one pipeline, print its numbers and its own peak RSS as JSON."""
    files = corpus(args.docs)
    if args.one == "tutorial":
        result = run_tutorial(files)
    else:
        result = run_lectern(files, args.one, Path(args.data_dir), repeat=args.one == "accurate")
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def child(name: str, docs: list[Path], data_dir: Path) -> dict[str, float]:
    cmd = [sys.executable, "-m", "bench.ingest_speed", "--one", name, "--data-dir", str(data_dir)]
    cmd += ["--docs", *map(str, docs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=Path, nargs="+", default=[R_MANUALS])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--models-from", type=Path, default=None, help="reuse a distilled model cache")
    args = parser.parse_args()
    if args.one:
        one(args)
        return
    files = corpus(args.docs)
    print(f"corpus: {len(files)} PDFs, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB", flush=True)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="lectern-bench-") as tmp:
        data_dir = Path(tmp)
        # The fast profile's one-off distillation is a model build, not ingestion: do it first.
        subprocess.run(
            [sys.executable, "-c", "from pathlib import Path; from lectern.ingest.embed import distilled_minilm; "
             f"distilled_minilm(Path({str(data_dir / 'models')!r}))"],
            check=True, capture_output=True,
        )  # fmt: skip
        for name in ("tutorial", "accurate", "accurate-fp32", "fast"):
            results[name] = child(name, args.docs, data_dir)
            r = results[name]
            print(f"{name}: {json.dumps({k: round(v, 2) for k, v in r.items()})}", flush=True)
    base = results["tutorial"]
    print("\n| pipeline | chunks | seconds | chunks/s | chars/s | peak RSS MB | chunks/s vs tutorial |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        rate = r["chunks"] / r["seconds"]
        ratio = rate / (base["chunks"] / base["seconds"])
        print(
            f"| {name} | {r['chunks']:.0f} | {r['seconds']:.1f} | {rate:.1f} | {r['chars'] / r['seconds']:.0f} "
            f"| {r['peak_rss_mb']:.0f} | {ratio:.2f}x |"
        )
    acc = results["accurate"]
    print(
        f"\nre-ingest of the unchanged corpus: {acc['reingest_seconds']:.2f} s = "
        f"{100 * acc['reingest_seconds'] / acc['seconds']:.1f}% of the first ingest"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
