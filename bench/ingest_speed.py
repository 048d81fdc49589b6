"""Ingest and start-up as a user meets them: whole processes, side by side with the tutorial pipeline.

    .venv/bin/python -m bench.ingest_speed [--docs DIR ...] [--rounds N] [--cases ...] [--json OUT]
    .venv/bin/python -m bench.avx2_only -- .venv/bin/python -m bench.ingest_speed   # as on an AVX2-only CPU

Default corpus: the R manuals of Debian's r-doc-pdf, all but the reference manual. Every case is one
fresh process, timed from its start to its exit, with the peak resident memory of its whole process
tree (parse workers included, sampled every 20 ms):

- tutorial: the LangChain tutorial pipeline (bench/tutorial.py), MiniLM through HuggingFaceEmbeddings;
- precision (new machine): the accurate embedder's first load with `precision = "auto"` and an empty
  user cache: the ONNX export and the micro-benchmark that pick this CPU's precision, once per machine
  (ingest.cpu_precision); it runs before `accurate` in every round, so that `accurate` finds the choice;
- accurate: `lectern ingest --profile accurate` into a new data dir, with that choice (or --precision);
- accurate fp32: the same with `ingest.embed.precision = "fp32"`: torch fp32, what `accurate` ran on
  a CPU without bf16 before the choice was measured;
- fast (new machine): `lectern ingest --profile fast` with an empty user cache, so the static model
  is built inside the timed process, as on a first run;
- fast (model cached): the same into another new data dir, the cache now holding the model;
- re-ingest: `lectern ingest` of the unchanged corpus into the accurate collection;
- `lectern list` of that collection, and `lectern --help`.

Ratios are the tutorial's seconds over each case's, within one round. With --rounds 2 the second
round runs the ingests in another order, so that load from other jobs falls on both sides alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import avx2_only

R_MANUALS = Path("/usr/share/R/doc/manual")
SKIP = {"refman.pdf", "fullrefman.pdf"}
SAMPLE_S = 0.02


def corpus(dirs: list[Path]) -> list[Path]:
    """The PDFs in these folders (and these files), the reference manuals left out."""
    files: list[Path] = []
    for d in dirs:
        files.extend([d] if d.is_file() else sorted(p for p in d.glob("*.pdf") if p.name not in SKIP))
    return files


def _tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc (Linux)."""
    total, pending, seen = 0, [pid], set()
    while pending:
        p = pending.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="ascii") as fh:
                    pending.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return total


def timed(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one whole process: wall seconds, peak tree RSS in MB, exit code, stdout."""
    peak = 0
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_kb(proc.pid))
            done.wait(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {"seconds": seconds, "peak_rss_mb": peak / 1024, "stdout": stdout}


def tutorial_child(docs: list[Path]) -> None:
    """Child process: the tutorial pipeline over the corpus; prints chunks and characters."""
    from bench import tutorial

    store, chunks = tutorial.build(corpus(docs))
    chars = sum(len(d.page_content) for d in store.docstore._dict.values())
    print("RESULT " + json.dumps({"chunks": chunks, "chars": chars}), flush=True)


def lectern_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lectern.cli", *args]


def collection_chars(data_dir: Path, name: str) -> int:
    from lectern.ingest.faiss_store import Collection

    col = Collection.open(data_dir / "collections" / name)
    try:
        return sum(len(r[0]) for r in col.db.execute("SELECT text FROM chunks"))
    finally:
        col.close()


def precision_child() -> None:
    """Child process: the accurate embedder's first embed, as `lectern ingest` loads it; prints what runs."""
    from lectern.ingest.embed import build_embedder
    from lectern.rag.settings import load_settings

    settings = load_settings()
    embedder: Any = build_embedder(settings.ingest.embed, settings.models_dir)
    embedder.embed(["The R manuals, embedded once."])
    print("RESULT " + json.dumps({"precision": embedder.precision}), flush=True)


def one_round(
    docs: list[Path], order: list[str], tmp: Path, precision: str | None = None
) -> dict[str, dict[str, Any]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_")}
    base.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="200")
    cache = tmp / "user-cache"  # empty: the first fast ingest of the round builds the static model
    names = ("accurate", "accurate-fp32", "precision", "fast-new", "fast-cached")
    data = {name: tmp / f"data-{name}" for name in names}
    env = {
        name: {**base, "LECTERN_DATA_DIR": str(d), "LECTERN_CACHE_DIR": str(cache)}
        for name, d in data.items()
    }
    env["accurate-fp32"]["LECTERN_INGEST__EMBED__PRECISION"] = "fp32"
    if precision:
        env["accurate"]["LECTERN_INGEST__EMBED__PRECISION"] = precision
    doc_args = [str(f) for f in corpus(docs)]  # the very same files for every pipeline
    out: dict[str, dict[str, Any]] = {}
    for case in order:
        if case == "tutorial":
            cmd = [sys.executable, "-m", "bench.ingest_speed", "--tutorial-child", "--docs", *doc_args]
            r = timed(cmd, base)
            line = next(x for x in r["stdout"].splitlines() if x.startswith("RESULT "))
            r.update(json.loads(line[7:]))
        elif case == "precision":
            r = timed([sys.executable, "-m", "bench.ingest_speed", "--precision-child"], env[case])
            line = next(x for x in r["stdout"].splitlines() if x.startswith("RESULT "))
            r.update(json.loads(line[7:]))
            r["measured"] = _measured(cache)
        elif case in ("accurate", "accurate-fp32", "fast-new", "fast-cached"):
            profile = "accurate" if case.startswith("accurate") else "fast"
            r = timed(
                lectern_cmd("ingest", *doc_args, "-c", "bench", "--profile", profile, "--json"), env[case]
            )
            summary = json.loads(r["stdout"])
            assert summary["failed"] == 0 and summary["added"] == len(corpus(docs)), summary
            r.update(
                chunks=summary["chunks"], pages=summary["pages"], chars=collection_chars(data[case], "bench")
            )
        elif case == "reingest":
            r = timed(lectern_cmd("ingest", *doc_args, "-c", "bench", "--json"), env["accurate"])
            summary = json.loads(r["stdout"])
            assert summary["unchanged"] == len(corpus(docs)) and summary["chunks"] == 0, summary
        elif case == "list":
            r = timed(lectern_cmd("list", "-c", "bench", "--json"), env["accurate"])
            assert len(json.loads(r["stdout"])) == len(corpus(docs))
        elif case == "help":
            r = timed(lectern_cmd("--help"), base)
        else:
            raise SystemExit(f"unknown case {case}")
        r.pop("stdout")
        out[case] = r
        shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}
        print(f"  {case}: " + json.dumps(shown), flush=True)
    return out


ORDERS = [
    [
        "tutorial",
        "precision",
        "accurate",
        "accurate-fp32",
        "fast-new",
        "fast-cached",
        "reingest",
        "list",
        "help",
    ],
    [
        "precision",
        "fast-new",
        "fast-cached",
        "accurate-fp32",
        "accurate",
        "tutorial",
        "reingest",
        "list",
        "help",
    ],
]
NEEDS = {"accurate": "precision", "reingest": "accurate", "list": "accurate", "fast-cached": "fast-new"}


def _measured(cache: Path) -> dict[str, Any]:
    """What the precision choice measured (seconds and cosines per precision), from the user cache."""
    from lectern.ingest.cpu_precision import CACHE_FILE

    try:
        entries = json.loads((cache / "models" / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    entry: dict[str, Any] = next(iter(entries.values()), {})
    return {k: entry.get(k) for k in ("choice", "seconds", "mean_cosine", "min_cosine")}


def order_of(round_index: int, cases: list[str] | None) -> list[str]:
    """The round's order, kept to `cases` and what they need (accurate needs the choice made first)."""
    wanted = set(cases or ORDERS[0])
    for case in list(wanted):
        while case in NEEDS:
            case = NEEDS[case]
            wanted.add(case)
    return [c for c in ORDERS[round_index % len(ORDERS)] if c in wanted]


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    """What the numbers depend on: CPU model, cores, SIMD flags, torch's kernels, ISA limits, load."""
    flags: set[str] = set()
    model = platform.processor()
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    torch_isa = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    bf16 = subprocess.run(
        [sys.executable, "-c", "from lectern.ingest.st_embed import cpu_has_native_bf16; print(cpu_has_native_bf16())"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "flags": " ".join(f for f in wanted if f in flags),
        "torch_capability": torch_isa,
        "bf16_native": bf16,  # the flags' rule: what torch could run, not what `auto` chooses
        "onnxruntime": _version("onnxruntime"),
        # CPUID and /proc/cpuinfo masked to AVX2 for every process (bench/avx2_only.py): the flags
        # above are then the masked ones
        "cpuid_masked_to_avx2": str(avx2_only.active()),
        "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA", "-"),
        "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY", "-"),
        "load_average_1m": f"{os.getloadavg()[0]:.2f}",
    }


LABELS = {
    "tutorial": "tutorial pipeline",
    "precision": "precision choice, new machine (ONNX export and micro-benchmark)",
    "accurate": "lectern `accurate`, the choice",
    "accurate-fp32": "lectern `accurate`, fp32 torch",
    "fast-new": "lectern `fast`, new machine (static model built in the run)",
    "fast-cached": "lectern `fast`, static model cached",
    "reingest": "re-ingest, corpus unchanged",
    "list": "`lectern list`",
    "help": "`lectern --help`",
}


def table(rounds: list[dict[str, dict[str, Any]]], precision: str | None = None) -> str:
    """The rounds side by side; `precision` is the accurate case's when forced (else the choice's)."""
    lines = [
        "| case | "
        + " | ".join(f"round {i + 1} s" for i in range(len(rounds)))
        + " | peak RSS MB | vs tutorial |",
        "|---|" + "---|" * len(rounds) + "---|---|",
    ]
    for case, label in LABELS.items():
        if case not in rounds[0]:
            continue
        secs = [r[case]["seconds"] for r in rounds]
        rss = max(r[case]["peak_rss_mb"] for r in rounds)
        ratio = ""
        if "tutorial" in rounds[0] and case not in ("tutorial", "list", "help", "reingest", "precision"):
            ratio = ", ".join(f"{r['tutorial']['seconds'] / r[case]['seconds']:.2f}x" for r in rounds)
        if case == "accurate":
            ran = [precision or str(r["precision"]["precision"]) for r in rounds]
            label += " (" + ", ".join(ran) + (", forced" if precision else "") + ")"
        lines.append(f"| {label} | " + " | ".join(f"{s:.2f}" for s in secs) + f" | {rss:.0f} | {ratio} |")
    first = rounds[0]
    lines.append("")
    for case in ("tutorial", "accurate", "accurate-fp32", "fast-cached"):
        if case in first:
            lines.append(f"{case}: {first[case]['chunks']} chunks, {first[case]['chars']} characters")
    for i, r in enumerate(rounds):
        if "precision" in r:
            lines.append(f"round {i + 1} precision choice: {json.dumps(r['precision']['measured'])}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=Path, nargs="+", default=[R_MANUALS])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--cases", nargs="+", choices=list(LABELS), default=None, help="a subset")
    parser.add_argument(
        "--precision", default=None, help="the accurate case's ingest.embed.precision (default: auto)"
    )
    parser.add_argument("--tutorial-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tutorial_child:
        tutorial_child(args.docs)
        return
    if args.precision_child:
        precision_child()
        return
    files = corpus(args.docs)
    pages = None
    print(f"corpus: {len(files)} PDFs, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB", flush=True)
    info = machine()
    print("machine: " + json.dumps(info), flush=True)
    rounds = []
    for i in range(args.rounds):
        print(f"round {i + 1}", flush=True)
        with tempfile.TemporaryDirectory(prefix="lectern-bench-") as tmp:
            rounds.append(one_round(args.docs, order_of(i, args.cases), Path(tmp), args.precision))
        pages = rounds[-1].get("accurate", {}).get("pages", pages)
    info["load_average_1m_end"] = f"{os.getloadavg()[0]:.2f}"
    print(f"\npages: {pages}; load average at the end {info['load_average_1m_end']}\n")
    print(table(rounds, args.precision))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
