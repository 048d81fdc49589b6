"""Peak memory of ingesting one large text file: the whole-file path (what lectern did before, still
used below ingest.stream_bytes) against the streamed one (a batch of chunks at a time).

    python bench/large_text_memory.py --mb 50 --embedder minilm-tokens  # MiniLM's tokenizer, fake vectors
    python bench/large_text_memory.py --mb 50                  # fake embedder (word tokens)
    python bench/large_text_memory.py --mb 10 --embedder accurate  # MiniLM itself (slow on 2 cores)
    python bench/large_text_memory.py --mb 10 --text html --modes streamed  # one big HTML table

`minilm-tokens` chunks with the accurate profile's own tokenizer (where the memory went: word-piece
offsets of the whole file) and embeds with the fake embedder, so the figure is lectern's pipeline
without the model's weights. Each mode runs the ingest in a fresh process (`lectern ingest`, or the
Python API for minilm-tokens). Reported: the peak resident set of the largest
process (getrusage of the waited-for children, exact) and the peak of the whole process tree's
summed RSS (sampled from /proc every 50 ms, so a lower bound). Results: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHOLE = str(1 << 62)  # ingest.stream_bytes past any file: the whole-file path


MINILM_TOKENS = """
import sys
from pathlib import Path
from lectern.ingest.embed_base import packaged_minilm_path
from lectern.ingest.fake_embed import FakeEmbedder
from lectern.ingest.wordpiece import HFTokenizer
from lectern.ingest.pipeline import ingest
from lectern.ingest.settings import IngestSettings

class MiniLMTokens(FakeEmbedder):
    # the accurate profile's tokenizer and window; fake vectors
    @property
    def tokenizer_file(self):
        return str(packaged_minilm_path() / "tokenizer.json")

    def offsets(self, texts):
        return HFTokenizer(self.tokenizer_file).offsets(texts)

if __name__ == "__main__":
    cfg = IngestSettings(stream_bytes=int(sys.argv[3]))
    report = ingest([Path(sys.argv[1])], Path(sys.argv[2]) / "big", MiniLMTokens(dimension=384, max_tokens=256), cfg)
    assert report.ok, report.results
    print(report.summary())
"""


def write_text(path: Path, megabytes: int, kind: str = "prose") -> None:
    """`megabytes` MiB of deterministic text: prose in paragraphs (about six characters a word piece),
    numeric tables (about two: many more chunks for the same size), or one HTML table (a spreadsheet
    saved as a page: much markup, little text a cell; parsed in a worker, whatever stream_bytes)."""
    if kind == "html":
        with path.open("w", encoding="utf-8") as fh:
            fh.write("<html><head><title>Ferry times</title></head><body><table>\n")
            row = 0
            while fh.tell() < megabytes << 20:
                fh.write(f"<tr><td>{row}</td><td>pier {row % 97}</td><td>{row * 7 % 1000}.5</td></tr>\n")
                row += 1
            fh.write("</table></body></html>\n")
        return
    words = ["keeper", "lantern", "harbour", "tide", "ferry", "market", "slipway", "beacon", "signal",
             "weather", "chart", "rope"]  # fmt: skip
    rng = random.Random(1)
    target = megabytes << 20
    with path.open("w", encoding="utf-8") as fh:
        written, i = 0, 0
        while written < target:
            if kind == "numeric":
                para = " ".join(
                    f"{rng.randint(0, 99999)}.{rng.randint(0, 99)}/{rng.choice('abcxyz')}" for _ in range(12)
                )
                para += "\n"
            else:
                sentence = " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(14))
                para = f"Paragraph {i}: the {sentence} number{i}. It was noted in the log.\n\n"
            fh.write(para)
            written += len(para)
            i += 1


def tree_rss(root: int) -> int:
    """Summed RSS in bytes of `root` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            parents[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            continue
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(p for p, parent in parents.items() if parent == pid and p not in tree)
    return sum(rss.get(p, 0) for p in tree)


def measure(text: Path, stream_bytes: str, embedder: str, data: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_")}
    env.update(
        LECTERN_DATA_DIR=str(data),
        LECTERN_INGEST__STREAM_BYTES=stream_bytes,
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
    )
    if embedder == "fake":
        env["LECTERN_INGEST__EMBED__MODEL"] = "fake"
    ingest_cmd = [sys.executable, "-m", "lectern.cli", "ingest", str(text), "-c", "big"]
    if embedder == "minilm-tokens":
        ingest_cmd = [sys.executable, "-c", MINILM_TOKENS, str(text), str(data), stream_bytes]
    code = (
        "import resource, subprocess, sys, json, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(json.dumps({'rc': p.returncode, 'tail': p.stdout[-300:] + p.stderr[-300:],"
        " 'seconds': time.perf_counter() - t,"
        " 'max_process_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    cmd = [sys.executable, "-c", code, *ingest_cmd]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    peak_tree = 0
    while proc.poll() is None:
        peak_tree = max(peak_tree, tree_rss(proc.pid))
        time.sleep(0.05)
    import json

    assert proc.stdout is not None
    result = json.loads(proc.stdout.read())
    if result["rc"] != 0:
        raise SystemExit(f"ingest failed: {result['tail']}")
    return {
        "max_process_mb": result["max_process_kb"] / 1024,
        "tree_peak_mb": peak_tree / 2**20,
        "seconds": result["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=50, help="size of the text file in MiB")
    parser.add_argument("--embedder", choices=["minilm-tokens", "fake", "accurate"], default="minilm-tokens")
    parser.add_argument("--modes", default="whole,streamed")
    parser.add_argument("--text", choices=["prose", "numeric", "html"], default="prose")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / ("large.html" if args.text == "html" else "large.txt")
        write_text(text, args.mb, args.text)
        print(
            f"{args.mb} MiB {args.text} text file, {args.embedder} embedder, Python {sys.version.split()[0]}"
        )
        print(f"{'mode':<10} {'largest process peak':>22} {'process tree peak':>20} {'seconds':>8}")
        for mode in args.modes.split(","):
            stream = WHOLE if mode == "whole" else str(8 << 20)
            r = measure(text, stream, args.embedder, Path(tmp) / f"data-{mode}")
            print(
                f"{mode:<10} {r['max_process_mb']:>19.0f} MB {r['tree_peak_mb']:>17.0f} MB {r['seconds']:>8.1f}",
                flush=True,
            )
    print(
        "peak RSS of this bench process itself:",
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "MB",
    )


if __name__ == "__main__":
    main()
