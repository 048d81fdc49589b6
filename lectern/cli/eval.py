"""`lectern eval retrieval` and `lectern eval answers`: quality measured on a QA set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lectern.cli.edge import edge, llm_flags, settings_from_flags, warn_remote
from lectern.cli.options import AdapterOpt, BackendOpt, DataDir, JsonOpt, ModelOpt, ModeOpt, PromptOpt
from lectern.cli.output import out, shown


def eval_retrieval(
    qa_dir: Annotated[Path, typer.Option("--qa-dir", help="A folder laid out like the CMU QA dataset.")],
    mode: ModeOpt = None,
    profile: Annotated[str, typer.Option(help="accurate | fast")] = "accurate",
    data_dir: DataDir = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval quality: article and answer hit@1/5/10, MRR@10, mean query milliseconds."""
    from lectern.rag.evaluate import run_retrieval_eval

    with edge():
        settings = settings_from_flags(data_dir, **{"ingest.embed": {"profile": profile}})
        metrics, n = run_retrieval_eval(qa_dir, settings, mode)
        if as_json:
            out.print(json.dumps(metrics), soft_wrap=True, highlight=False, markup=False)
            return
        table = Table(
            title=f"retrieval on {shown(qa_dir)} ({n} questions, {mode or settings.retrieval.mode}, {profile})"
        )
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in metrics.items():
            table.add_row(name, f"{value:.4f}" if name != "mean_query_ms" else f"{value:.2f}")
        out.print(table)


def eval_answers(
    qa_dir: Annotated[Path, typer.Option("--qa-dir", help="A folder laid out like the CMU QA dataset.")],
    limit: Annotated[int, typer.Option(help="How many answerable questions to sample (quote n >= 60).")] = 60,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    prompt: PromptOpt = None,
    context: Annotated[
        str | None, typer.Option(help="What the model is shown: sentences (best ones) | chunks (whole).")
    ] = None,
    evidence: Annotated[
        bool | None,
        typer.Option(
            "--evidence/--no-evidence", help="Abstain when the sources lack the question's subject."
        ),
    ] = None,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Write one JSON line per question (answer, gold, citations...)."),
    ] = None,
    questions: Annotated[
        Path | None,
        typer.Option(
            "--questions",
            help="A JSONL file of questions over the folder's articles (bench/data/paraphrase_s08.jsonl).",
        ),
    ] = None,
    wording: Annotated[
        str,
        typer.Option(help="With --questions: ask each line's `question`, or its `original` wording."),
    ] = "question",
    seed: Annotated[int, typer.Option(help="The sample's seed.")] = 0,
    data_dir: DataDir = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer quality: gold answer contained (strict, lenient, content-word recall, F1), in the
    sources, cited passage, abstentions with the article and without it, seconds per answer."""
    from lectern.rag.evaluate_answers import QuestionSource, eval_answers_command

    with edge():
        answer = {"prompt": prompt, "context": context, "evidence": evidence}
        settings = settings_from_flags(data_dir, llm=llm_flags(backend, model, adapter), answer=answer)
        warn_remote(settings)
        source = QuestionSource(questions, wording) if questions is not None else None
        eval_answers_command(
            qa_dir,
            settings,
            limit,
            as_json=as_json,
            console=out,
            out_path=out_path,
            seed=seed,
            questions=source,
        )
