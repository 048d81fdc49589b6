"""The ray ingest runner against the local one on this machine: whole processes, one run, and a check
that both build the same collection.

    nice -n 10 .venv/bin/python -m bench.ray_ingest [--docs DIR ...] [--profiles accurate fast]
        [--actors 1 2] [--cmu S08] [--json OUT]

Corpus: the R manuals of Debian's r-doc-pdf but the reference manuals (bench.ingest_speed.corpus).
For each profile: `lectern ingest --runner local`, then `--runner ray` with N embedding actors
(LECTERN_INGEST__RAY__EMBED_ACTORS) for each N of --actors, each a fresh process into a new data
dir, timed from start to exit, with the peak resident memory of its whole process tree (Ray's GCS,
raylet and workers included). OMP_NUM_THREADS is left unset, as a user runs it: the local runner's
torch takes every core, a Ray actor as many threads as the CPUs it holds (ingest.ray.actor_cpus, 1).
What a profile builds once per machine (the fast profile's static model, accurate's precision
choice and ONNX export) is built before the clock starts.

Then each ray collection is compared with the local one: the same rows (row id, chunk id, source,
text), the same counts, vectors within float noise and the same top 5 (hybrid) for questions taken
from the corpus. With --cmu YEAR the CMU articles of that year are ingested by both runners
(accurate) and compared the same way over the year's questions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.ingest_speed import R_MANUALS, corpus, lectern_cmd, machine, timed

CMU = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu-wikiqa"


def base_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_") and k != "OMP_NUM_THREADS"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="200", LECTERN_CACHE_DIR=str(cache))
    return env


def ingest_case(
    files: list[str],
    profile: str,
    runner: str,
    actors: int | None,
    data: Path,
    env: dict[str, str],
    omp: int | None = None,
) -> dict[str, Any]:
    case_env = {**env, "LECTERN_DATA_DIR": str(data)}
    if omp:
        case_env["OMP_NUM_THREADS"] = str(omp)
    if actors:
        case_env["LECTERN_INGEST__RAY__EMBED_ACTORS"] = str(actors)
    cmd = lectern_cmd("ingest", *files, "-c", "bench", "--profile", profile, "--runner", runner, "--json")
    r = timed(cmd, case_env)
    summary = json.loads(r.pop("stdout"))
    assert summary["failed"] == 0 and summary["added"] == len(files), summary
    r.update(chunks=summary["chunks"], pages=summary["pages"])
    return r


def collection(data: Path) -> Path:
    return data / "collections" / "bench"


def compare(a: Path, b: Path, profile: str, questions: list[str], cache: Path) -> dict[str, Any]:
    """How far collection b is from a: rows, counts, vectors, and the top 5 of each question."""
    from lectern.ingest.embed import build_embedder
    from lectern.ingest.faiss_store import Collection
    from lectern.ingest.settings import EmbedSettings
    from lectern.rag.retrieval import Searcher
    from lectern.rag.settings import RetrievalSettings

    embedder = build_embedder(EmbedSettings(profile=profile), cache / "models")  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    cols = [Collection.open(a), Collection.open(b)]
    try:
        sql = "SELECT id, chunk_id, source, text FROM chunks ORDER BY id"
        rows = [c.db.execute(sql).fetchall() for c in cols]
        out["chunks"] = [len(r) for r in rows]
        out["same_rows"] = rows[0] == rows[1]
        vecs = [
            np.vstack(
                [
                    np.frombuffer(v, np.float32)
                    for (v,) in c.db.execute("SELECT vector FROM chunks ORDER BY id")
                ]
            )
            for c in cols
        ]
        out["max_vector_gap"] = float(np.abs(vecs[0] - vecs[1]).max())
        searchers = [Searcher(c, embedder, RetrievalSettings()) for c in cols]
        tops = [[[h.chunk.chunk_id for h in s.search(q, k=5)] for q in questions] for s in searchers]
        out["questions"] = len(questions)
        out["same_top5"] = sum(x == y for x, y in zip(tops[0], tops[1], strict=True))
    finally:
        for c in cols:
            c.close()
    return out


def corpus_questions(col: Path, every: int = 40) -> list[str]:
    """Questions from the corpus itself: the first ten words of every `every`-th chunk."""
    from lectern.ingest.faiss_store import Collection

    c = Collection.open(col)
    try:
        texts = [t for (t,) in c.db.execute("SELECT text FROM chunks ORDER BY id")]
    finally:
        c.close()
    return [" ".join(t.split()[:10]) for t in texts[::every]]


def warm(tmp: Path, env: dict[str, str], profiles: list[str]) -> None:
    """What each profile builds once per machine, in the cache, before any timed case: the fast
    profile's static model; accurate's precision choice and ONNX export (ingest.cpu_precision)."""
    doc = tmp / "warm" / "warm.txt"
    doc.parent.mkdir(parents=True)
    doc.write_text("Warm up\n\nWhat a profile builds is built once per machine.\n")
    for profile in profiles:
        timed(
            lectern_cmd("ingest", str(doc), "-c", f"warm-{profile}", "--profile", profile),
            {**env, "LECTERN_DATA_DIR": str(tmp / "warm-data")},
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", nargs="+", type=Path, default=[R_MANUALS])
    parser.add_argument("--profiles", nargs="*", default=["accurate", "fast"])
    parser.add_argument("--actors", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--cmu", default=None, help="a CMU year (S08) to compare the runners on")
    parser.add_argument(
        "--local-omp",
        type=int,
        default=None,
        help="also the local runner with OMP_NUM_THREADS=N (torch threads)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(json.dumps(machine()), flush=True)
    results: dict[str, Any] = {"machine": machine(), "cases": {}, "compare": {}}
    files = [str(f) for f in corpus(args.docs)]
    with tempfile.TemporaryDirectory(prefix="lectern-bench-ray-") as name:
        tmp = Path(name)
        env = base_env(tmp / "cache")
        warm(tmp, env, sorted(set(args.profiles) | ({"accurate"} if args.cmu else set())))
        for profile in args.profiles:
            runs = [("local", None)] + [("ray", n) for n in args.actors]
            if args.local_omp:
                omp_label = f"{profile} local, OMP_NUM_THREADS={args.local_omp}"
                r = ingest_case(files, profile, "local", None, tmp / "omp", env, args.local_omp)
                results["cases"][omp_label] = r
                print(f"  {omp_label}: " + json.dumps({k: round(v, 2) for k, v in r.items()}), flush=True)
            for runner, actors in runs:
                label = f"{profile} {runner}" + (f" x{actors}" if actors else "")
                data = tmp / label.replace(" ", "-")
                r = ingest_case(files, profile, runner, actors, data, env)
                results["cases"][label] = r
                print(f"  {label}: " + json.dumps({k: round(v, 2) for k, v in r.items()}), flush=True)
            local = collection(tmp / f"{profile}-local")
            questions = corpus_questions(local)
            for _, actors in runs[1:]:
                label = f"{profile} ray x{actors}"
                c = compare(
                    local, collection(tmp / label.replace(" ", "-")), profile, questions, tmp / "cache"
                )
                results["compare"][label] = c
                print(f"  {label} vs local: {json.dumps(c)}", flush=True)
        if args.cmu:
            from lectern.rag.evaluate import articles_of, load_qa

            items = load_qa(CMU / args.cmu)
            articles = [str(p) for p in articles_of(items)]
            for runner, actors in (("local", None), ("ray", 1)):
                label = f"{args.cmu} accurate {runner}" + (" x1" if actors else "")
                r = ingest_case(articles, "accurate", runner, actors, tmp / f"cmu-{runner}", env)
                results["cases"][label] = r
                print(f"  {label}: " + json.dumps({k: round(v, 2) for k, v in r.items()}), flush=True)
            c = compare(
                collection(tmp / "cmu-local"), collection(tmp / "cmu-ray"), "accurate",
                [i.question for i in items], tmp / "cache",
            )  # fmt: skip
            results["compare"][f"{args.cmu} accurate ray x1"] = c
            print(f"  {args.cmu} ray vs local: {json.dumps(c)}", flush=True)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def print_table(results: dict[str, Any]) -> None:
    print("\n| case | s | peak RSS MB | chunks | vs local |")
    print("|---|---|---|---|---|")
    cases = results["cases"]
    for label, r in cases.items():
        local = cases.get(label.split(" ray")[0] + " local") if " ray" in label else None
        ratio = f"{local['seconds'] / r['seconds']:.2f}x" if local else ""
        print(f"| {label} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['chunks']} | {ratio} |")
    print("\n| ray case vs local | chunks (local, ray) | same rows | max vector gap | same top 5 |")
    print("|---|---|---|---|---|")
    for label, c in results["compare"].items():
        print(
            f"| {label} | {c['chunks'][0]}, {c['chunks'][1]} | {c['same_rows']} | {c['max_vector_gap']:.1e} "
            f"| {c['same_top5']}/{c['questions']} |"
        )


if __name__ == "__main__":
    sys.exit(main())
