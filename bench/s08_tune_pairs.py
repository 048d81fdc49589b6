"""Training pairs for `lectern tune --data` from the CMU S08 question/answer pairs: each answerable
question with the top-3 chunks lectern retrieves for it from the S08 articles, kept only when one of
them holds the gold answer; the answer is the gold one, cited with that chunk's [n] (the format the
QA chain's concise answers take). The adapter is then evaluated on S09, which it never saw.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.s08_tune_pairs --qa-dir ../shared/data/cmu-wikiqa/S08 \
        --data-dir DIR --out bench/out/s08-pairs.jsonl [--limit 200]

The collection `s08` under --data-dir holds the S08 articles (bench/agent_multihop.py builds it; it
is ingested here when missing).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from lectern.rag.answer_metrics import contains_gold
from lectern.rag.evaluate import load_qa
from lectern.rag.settings import load_settings
from lectern.rag.workspace import Workspace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qa-dir", type=Path, required=True)
    ap.add_argument("--data-dir", type=Path, default=Path(".lectern-data/bench-agent"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ws = Workspace(
        collection="s08", settings=load_settings(data_dir=args.data_dir, ingest={"parse_workers": 0})
    )
    if not ws.exists:
        ws.ingest(sorted(args.qa_dir.glob("data/set*/a*.txt.clean")))
    items = [i for i in load_qa(args.qa_dir) if i.answerable]
    random.Random(args.seed).shuffle(items)
    kept = 0
    with args.out.open("w", encoding="utf-8") as out:
        for item in items:
            hits = ws.search(item.question, k=args.k)
            holding = [n for n, h in enumerate(hits, 1) if contains_gold(h.chunk.text, item.answerable)]
            if not holding:
                continue
            chunk = hits[holding[0] - 1].chunk.text
            written = [a.strip().rstrip(".") for a in item.answers if a.strip() and contains_gold(chunk, [a])]
            if not written:  # only a normalised form matched: keep the dataset's own wording
                continue
            gold = min(written, key=len)
            gold = gold[0].upper() + gold[1:]
            sources = [
                {"source": h.chunk.source, "title": h.chunk.title or "", "text": h.chunk.text} for h in hits
            ]
            row = {"question": item.question, "answer": f"{gold}. [{holding[0]}]", "sources": sources}
            out.write(json.dumps(row) + "\n")
            kept += 1
            if kept == args.limit:
                break
    print(json.dumps({"pairs": kept, "from_questions": len(items), "out": str(args.out)}))


if __name__ == "__main__":
    main()
