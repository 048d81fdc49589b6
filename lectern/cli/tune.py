"""`lectern tune`: a LoRA adapter for the local model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lectern.cli.edge import edge, llm_flags, settings_from_flags
from lectern.cli.options import DataDir, ModelOpt
from lectern.cli.output import err, out, shown
from lectern.errors import InvalidInput


def tune(
    out_dir: Annotated[Path, typer.Option("--out", help="The adapter folder to write (replaced if one).")],
    data: Annotated[
        Path | None, typer.Option("--data", help='JSON lines: {"question", "answer", "sources"?}.')
    ] = None,
    from_collection: Annotated[
        str | None,
        typer.Option(
            "--from-collection", help="Make the pairs from this collection's chunks with the model."
        ),
    ] = None,
    pairs: Annotated[int, typer.Option(help="--from-collection: how many pairs at most.", min=1)] = 24,
    pairs_out: Annotated[
        Path | None, typer.Option("--pairs-out", help="--from-collection: also write the pairs here (JSONL).")
    ] = None,
    model: ModelOpt = None,
    steps: Annotated[int, typer.Option(help="Training steps, one example each.", min=1)] = 60,
    rank: Annotated[int, typer.Option(help="LoRA rank.", min=1)] = 8,
    learning_rate: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of the chunk pick, pair order and training.")] = 0,
    data_dir: DataDir = None,
) -> None:
    """Train a LoRA adapter for the local model on question/answer pairs, in the QA prompt ask uses:
    pairs from --data, or made by the model from a collection's chunks (--from-collection). Use the
    adapter with --adapter or llm.adapter."""
    from lectern.rag.llm.tune import tune as train

    with edge():
        if (data is None) == (from_collection is None):
            raise InvalidInput("--data / --from-collection", None, "give exactly one of them")
        settings = settings_from_flags(data_dir, llm=llm_flags("local", model))

        def step(done: int, loss: float) -> None:
            if done == 1 or done % 10 == 0 or done == steps:
                err.print(f"step {done}/{steps} loss {loss:.3f}", highlight=False)

        options: dict[str, Any] = {
            "steps": steps,
            "rank": rank,
            "learning_rate": learning_rate,
            "progress": step,
        }
        if from_collection is not None:
            from lectern.rag.tune_pairs import tune_from_collection

            def made(kept: int, tried: int) -> None:
                err.print(f"pairs: {kept} from {tried} chunks", highlight=False)

            report, _ = tune_from_collection(settings, from_collection, out_dir, count=pairs, seed=seed,
                                             pairs_out=pairs_out, on_pairs=made, **options)  # fmt: skip
        else:
            assert data is not None
            report = train(settings.llm, settings.models_dir, data, out_dir, seed=seed, **options)
        out.print(
            f"adapter for {shown(report.base)} in {shown(report.out)}: {report.examples} examples, {report.steps} steps "
            f"in {report.seconds:.0f} s, loss {report.first_loss:.3f} -> {report.last_loss:.3f}"
        )
