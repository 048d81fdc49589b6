"""`lectern ingest`, `prepare`, `delete`, `migrate` and `list`: filling a collection and looking at it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from lectern.cli.edge import EXIT_FAILED_FILES, edge, settings_from_flags, workspace
from lectern.cli.options import CollectionOpt, DataDir, JsonOpt
from lectern.cli.output import err, out, print_json, shown

if TYPE_CHECKING:
    from lectern.ingest.report import IngestReport


def distinguishing(paths: list[str]) -> tuple[list[str], str]:
    """The paths relative to the folder they all share, and that folder ("" when they share none or
    there is one path): rows of one deep folder otherwise start alike and differ only past the width
    of a terminal."""
    if len(paths) < 2:
        return paths, ""
    try:
        common = os.path.commonpath(paths)
    except ValueError:  # relative beside absolute paths
        return paths, ""
    if common in ("", os.sep) or common in paths:
        return paths, ""
    return [os.path.relpath(p, common) for p in paths], common


def print_report(report: IngestReport, as_json: bool) -> None:
    if as_json:
        data = report.summary()
        data["files"] = [r.__dict__ for r in report.results]
        print_json(json.dumps(data))
        return
    paths, under = distinguishing([r.path for r in report.results])
    if under:  # a line of its own: a table's title wraps to the table's width
        out.print(f"files under {shown(under)}:", highlight=False)
    table = Table(title=f"ingest into {shown(repr(report.collection))}", show_lines=False)
    for col in ("status", "file", "pages", "chunks", "reason / warnings"):
        table.add_column(col, overflow="fold")  # on a narrow terminal a path wraps, it is not cut
    colours = {"added": "green", "updated": "cyan", "unchanged": "dim", "skipped": "yellow", "failed": "red"}
    for r, path in zip(report.results, paths, strict=True):
        note = r.reason or "; ".join(r.warnings[:3]) + (" …" if len(r.warnings) > 3 else "")
        table.add_row(
            f"[{colours.get(r.status, 'white')}]{r.status}[/]",
            shown(path),
            str(r.pages or ""),
            str(r.chunks or ""),
            shown(note),
        )
    out.print(table)
    s = report.summary()
    rate = s["chunks"] / s["seconds"] if s["seconds"] else 0.0
    out.print(
        f"added {s['added']}, updated {s['updated']}, unchanged {s['unchanged']}, skipped {s['skipped']}, "
        f"failed {s['failed']}; {s['chunks']} chunks from {s['pages']} pages in {s['seconds']:.1f} s"
        f" ({rate:.0f} chunks/s)"
    )
    if s["ocr_pages"]:
        speed = f", {s['ocr_pages_per_s']:.2f} pages/s a worker" if s["ocr_pages_per_s"] else ""
        out.print(f"OCR: {s['ocr_pages']} pages ({s['ocr_cached']} from the cache{speed})")


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders (walked recursively).")],
    collection: CollectionOpt = None,
    profile: Annotated[
        str | None, typer.Option(help="accurate | fast (fixed when a collection is created)")
    ] = None,
    include: Annotated[
        list[str] | None, typer.Option("--include", help="Glob to include (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Glob to exclude (repeatable).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-embed files even when unchanged.")] = False,
    follow_links: Annotated[
        bool | None,
        typer.Option(
            "--follow-links/--no-follow-links",
            help="Follow symbolic links that lead outside the folders given (default: skip and report them).",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Parse processes beside the embedder (0: inline).")
    ] = None,
    runner: Annotated[
        str | None,
        typer.Option(help="local (this machine's processes) | ray (Ray Data; pip install 'lectern[ray]')"),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(help="The ray runner's cluster: auto | ray://host:10001 (default: Ray on this machine)"),
    ] = None,
    ocr: Annotated[
        str | None,
        typer.Option(help="OCR of images and scanned PDF pages: auto | off | force (every PDF page)"),
    ] = None,
    data_dir: DataDir = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest files into a collection: unchanged files are skipped, changed ones replaced.

    Exits 1 when any file failed (each is reported with its reason), 2 on a usage or settings error."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with edge():
        settings = settings_from_flags(
            data_dir,
            **{
                "ingest.embed": {"profile": profile},
                "ingest": {
                    "parse_workers": workers,
                    "follow_links": follow_links,
                    "runner": runner,
                    "ocr": ocr,
                },
                "ingest.ray": {"address": address},
            },
        )
        ws = workspace(collection, settings)
        ws.embed_settings()  # the collection keeps its profile: another one is an error, before any work
        # Loads no model (that waits for the first chunk to embed), but a first `fast` ingest on this
        # machine builds its static model here, with its own line and progress bar, before ours starts.
        ws.embedder  # noqa: B018
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=as_json or not err.is_terminal,
        ) as bar:
            task = bar.add_task("ingesting", total=None, detail="")

            def show(p: Any) -> None:
                pages = f"{p.pages}/{p.pages_total}" if p.pages_total else str(p.pages)
                detail = f"{pages} pages, {p.chunks_embedded}/{p.chunks} chunks"
                if p.ocr_pages:
                    detail += f", {p.ocr_pages} pages read by OCR"
                bar.update(
                    task, description="ingesting", total=p.files_total, completed=p.files_done, detail=detail
                )

            report = ws.ingest(
                paths, progress=show, force=force, include=include or (), exclude=exclude or ()
            )
        print_report(report, as_json)
        if not report.ok:
            raise typer.Exit(EXIT_FAILED_FILES)


def prepare(
    profile: Annotated[
        list[str] | None,
        typer.Option("--profile", help="accurate | fast (repeatable; default: both)"),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Build now what each embedding profile builds once per machine on first use, so that a first
    ingest is as fast as the next: the fast profile's static model (model2vec's distillation, 20-40 s
    on 2 cores), the accurate profile's ONNX export and its precision measured on this CPU (about
    25 s). Kept in cache_dir and shared by every data dir; what is there already is not built again."""
    from lectern.ingest.embed import prepare as prepare_profile

    with edge():
        settings = settings_from_flags(data_dir)
        for name in profile or ["fast", "accurate"]:
            line = prepare_profile(name, settings.ingest.embed, settings.models_dir)
            out.print(shown(line), highlight=False, soft_wrap=True)  # a path stays on one line


def delete(
    sources: Annotated[list[str], typer.Argument(help="Source files to remove from the collection.")],
    collection: CollectionOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Remove documents from a collection, without rebuilding the rest."""
    with edge():
        ws = workspace(collection, settings_from_flags(data_dir))
        result = ws.delete(sources)
        missing = [s for s, n in result.items() if n < 0]
        for s, n in result.items():
            if n >= 0:
                out.print(f"deleted {shown(s)} ({n} chunks)", highlight=False)
        if missing:
            err.print(f"[red]error:[/red] not in collection {ws.name!r}: {shown(', '.join(missing))}")
            raise typer.Exit(EXIT_FAILED_FILES)


def migrate(
    source: Annotated[str, typer.Option("--from", help="faiss:NAME or milvus:URI/NAME")],
    destination: Annotated[
        str, typer.Option("--to", help="milvus:URI/NAME or faiss:NAME; without /NAME, the source's name")
    ],
    data_dir: DataDir = None,
) -> None:
    """Copy a collection to another store backend, chunks and vectors as they are (no re-embedding)."""
    with edge():
        from lectern.rag.workspace import migrate_collection

        report = migrate_collection(source, destination, settings_from_flags(data_dir))
        out.print(
            f"migrated {report.documents} documents ({report.chunks} chunks) from {shown(report.source)} to "
            f"{shown(report.destination)}; {len(report.unchanged)} already there unchanged",
            highlight=False,
        )


def list_documents(
    collection: CollectionOpt = None, data_dir: DataDir = None, as_json: JsonOpt = False
) -> None:
    """List the documents of a collection (or the collections, when there is none yet)."""
    with edge():
        ws = workspace(collection, settings_from_flags(data_dir))
        # A collection named on the command line must exist; the default one may not exist yet.
        docs = ws.collection().documents() if collection is not None else ws.documents()
        if as_json:
            print_json(json.dumps([d.__dict__ for d in docs]))
            return
        table = Table(title=f"collection {ws.name!r}")
        for col in ("source", "title", "format", "pages", "chunks"):
            table.add_column(col)
        for d in docs:
            table.add_row(
                shown(d.source), shown(d.title or ""), shown(d.format or ""), str(d.pages), str(d.chunks)
            )
        out.print(table)
        out.print(f"collections: {shown(', '.join(ws.collections()) or 'none')}", highlight=False)
