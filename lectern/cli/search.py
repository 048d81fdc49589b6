"""`lectern search`: the chunks that best match a query."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from lectern.cli.edge import edge, settings_from_flags, workspace
from lectern.cli.options import CollectionOpt, DataDir, JsonOpt, KOpt, ModeOpt
from lectern.cli.output import out, print_json, shown


def search(
    query: str,
    collection: CollectionOpt = None,
    mode: ModeOpt = None,
    k: KOpt = None,
    source: Annotated[
        list[str] | None, typer.Option("--source", help="Only this source (repeatable).")
    ] = None,
    page_min: Annotated[int | None, typer.Option("--page-min")] = None,
    page_max: Annotated[int | None, typer.Option("--page-max")] = None,
    mmr: Annotated[bool | None, typer.Option("--mmr/--no-mmr", help="Diversify with MMR.")] = None,
    data_dir: DataDir = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the chunks that best match a query, with source, page and score."""
    with edge():
        ws = workspace(collection, settings_from_flags(data_dir))
        hits = ws.search(
            query, k=k, mode=mode, sources=source or (), page_min=page_min, page_max=page_max, mmr=mmr
        )
        if as_json:
            print_json(json.dumps([h.to_document().metadata | {"text": h.chunk.text} for h in hits]))
            return
        if not hits:
            out.print("no matching chunks")
        for rank, h in enumerate(hits, 1):
            c = h.chunk
            where = (
                Path(c.source).name
                + (f" p.{c.page}" if c.page else "")
                + (f" § {c.heading}" if c.heading else "")
            )
            out.print(
                f"[bold]{rank}.[/bold] [cyan]{shown(where)}[/cyan]  score {h.score:.3f}", highlight=False
            )
            text = " ".join(c.text.split())
            out.print(f"   {shown(text[:400])}{'…' if len(text) > 400 else ''}", highlight=False)
