"""`lectern summarize`: a document, the collection or a query's chunks, each sentence citing its passages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from lectern.cli.ask import print_citations
from lectern.cli.edge import edge, llm_flags, settings_from_flags, warn_remote, workspace
from lectern.cli.options import AdapterOpt, BackendOpt, CollectionOpt, DataDir, JsonOpt, ModelOpt
from lectern.cli.output import err, out, print_json, shown

if TYPE_CHECKING:
    from lectern.rag.types import SummaryResult


def summarize(
    path: Annotated[
        str | None, typer.Argument(help="A document of the collection (ingested first if needed).")
    ] = None,
    collection: CollectionOpt = None,
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="Summarize the chunks this query finds.")
    ] = None,
    method: Annotated[
        str, typer.Option(help="stuff | refine | map_reduce | auto; a text that fits one call is stuffed")
    ] = "auto",
    unsupported: Annotated[
        str | None,
        typer.Option(help="mark | drop: a sentence no passage holds is shown marked, or left out"),
    ] = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    data_dir: DataDir = None,
    as_json: JsonOpt = False,
) -> None:
    """Summarize a document, the whole collection, or the result of a query; each sentence cites the
    passages that hold it, and one they do not is marked (or left out)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with edge():
        flags = {"llm": llm_flags(backend, model, adapter), "summary": {"unsupported": unsupported}}
        ws = workspace(collection, settings_from_flags(data_dir, **flags))
        warn_remote(ws.settings)
        if path is not None:
            ws.ensure_ingested(path)
        with Progress(
            TextColumn("[bold]summarizing"), BarColumn(), MofNCompleteColumn(), console=err, transient=True,
            disable=as_json or not err.is_terminal,
        ) as bar:  # fmt: skip
            task = bar.add_task("summarize", total=None)

            def show(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = ws.summarize(source=path, query=query, method=method, progress=show)
        if as_json:
            print_json(result.model_dump_json())
            return
        _print_summary(result)


def _print_summary(result: SummaryResult) -> None:
    """What ran and why, the summary with its [n] and flags, the passages cited, how much of it they hold."""
    from lectern.rag.faithful import note

    out.print(f"[bold]Summary of {shown(result.scope)}[/bold] ({result.method}, {result.chunks} chunks)")
    out.print(f"[dim]{shown(result.reason)}[/dim]\n", highlight=False)
    out.print(shown(result.marked()), highlight=False)
    print_citations(result)
    line = note(result)
    if line:
        style = "yellow" if result.unsupported else "dim"
        out.print(f"\n[{style}]{shown(line)}[/{style}]", highlight=False)
    if result.dropped:
        for sentence in result.unsupported:
            out.print(f"[dim]left out: {shown(sentence)}[/dim]", highlight=False)
