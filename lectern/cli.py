"""The `lectern` command line: parse, call the Python API, render. Errors become one sentence and a code.

Exit codes (also in `lectern --help` and the README): 0 done; 1 some files failed and were reported
(`ingest`; `delete` of unknown sources); 2 usage or configuration error, or input lectern cannot
use (a bad flag, setting, name or question); 3 internal error: one line on stderr and the path
of a file with the full trace.

Heavy imports (torch, transformers, faiss) happen inside the commands, so `lectern --help` is quick.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.table import Table

from lectern.errors import (
    InvalidInput,
    LecternError,
    report_bug,
)

if TYPE_CHECKING:
    from lectern.ingest.report import IngestReport
    from lectern.rag.settings import Settings
    from lectern.rag.types import Answer, SummaryResult
    from lectern.rag.workspace import Workspace

EXIT_OK, EXIT_FAILED_FILES, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
HELP = """lectern: private, local RAG over your documents.

Exit codes: 0 done; 1 some files failed and were reported (ingest, delete); 2 usage or """ + (
    """configuration error, or input lectern cannot use; 3 internal error (one line, and the file """
    """holding the full trace)."""
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help=HELP)
eval_app = typer.Typer(no_args_is_help=True, help="Measure retrieval and answer quality on a QA set.")
app.add_typer(eval_app, name="eval")


class PlainOffTerminal(Console):
    """Rich on a terminal. Off one (a pipe, a log file) lines are never wrapped and tables take their
    natural width: Rich's default of 80 columns there cut sentences and paths mid-way. Checked at
    each print, so a test's captured stream and a real pipe are treated alike."""

    UNWRAPPED = 1 << 20  # columns: wider than any line lectern prints

    @property
    def size(self) -> ConsoleDimensions:
        measured = super().size
        return measured if self.is_terminal else ConsoleDimensions(self.UNWRAPPED, measured.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


out = PlainOffTerminal()
err = PlainOffTerminal(stderr=True)

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Where collections live (LECTERN_DATA_DIR).")
]
CollectionOpt = Annotated[str | None, typer.Option("--collection", "-c", help="Collection name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ModeOpt = Annotated[str | None, typer.Option("--mode", "-m", help="hybrid | dense | bm25")]
KOpt = Annotated[int | None, typer.Option("-k", "--k", help="How many chunks to retrieve.")]
BackendOpt = Annotated[
    str | None, typer.Option("--backend", help="LLM backend: auto | llamacpp | local | openai | fake")
]
PromptOpt = Annotated[
    str | None, typer.Option("--prompt", help="QA prompt: zero_shot | few_shot | chain_of_thought")
]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="packaged:NAME, a model folder, a hub id or a .gguf")
]
AdapterOpt = Annotated[
    str | None,
    typer.Option("--adapter", help="A PEFT LoRA adapter folder for the local model (lectern tune)."),
]


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _visible(char: str) -> str:
    code = ord(char)
    return f"\\x{code - 0xDC00 if 0xDC80 <= code <= 0xDCFF else code:02x}"  # a surrogate: the raw byte


def shown(text: object) -> str:
    """User text (a path, title, heading, passage, message) as Rich prints it: what looks like markup
    (`[/quote]`) as it is, and control characters (an ANSI escape in a file name) and the undecodable
    bytes of a file name escaped (`\\x1b`). Every print of user text goes through here."""
    return escape(_CONTROL.sub(lambda m: _visible(m.group()), str(text)))


def _printable(data: Any) -> Any:
    """JSON data with what a file name holds that is not UTF-8 spelled out (\\xe9), as shown() does:
    stdout cannot take it raw."""
    if isinstance(data, str):
        return _SURROGATE.sub(lambda m: _visible(m.group()), data)
    if isinstance(data, dict):
        return {key: _printable(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_printable(value) for value in data]
    return data


def print_json(text: str) -> None:
    """Every --json output: the JSON text `text`, printable whatever names it holds."""
    out.print_json(json.dumps(_printable(json.loads(text))))


def _settings(data_dir: Path | None = None, **nested: Any) -> Settings:
    """CLI flags on top of every other settings source; says on stderr which settings files were read."""
    from lectern.rag.settings import load_settings, settings_files

    base = load_settings(data_dir=data_dir)
    files = settings_files(base)
    if files:
        err.print(f"[dim]settings read from: {shown(', '.join(map(str, files)))}[/dim]", highlight=False)
    if not nested:
        return base
    merged = base.model_dump()
    for section, values in nested.items():
        current = merged
        parts = section.split(".")
        for part in parts:
            current = current.setdefault(part, {})
        current.update({k: v for k, v in values.items() if v is not None})
    return type(base).model_validate(merged)


def _warn_remote(settings: Settings) -> None:
    """Passages are about to leave this machine for an address the user did not give here: say so."""
    from lectern.rag.settings import remote_llm_notice

    notice = remote_llm_notice(settings)
    if notice:
        err.print(f"[yellow]warning:[/yellow] {shown(notice)}", highlight=False)


def _workspace(collection: str | None, settings: Settings) -> Workspace:
    from lectern.rag.workspace import Workspace

    return Workspace(collection=collection, settings=settings)


def _internal_error(exc: BaseException) -> NoReturn:
    """A bug, not the user's doing: one line, the full trace in a file, exit 3."""
    line = report_bug(exc, f"lectern {' '.join(sys.argv[1:])}")
    err.print(f"[red]internal error:[/red] {shown(line)}", highlight=False)
    raise typer.Exit(EXIT_INTERNAL) from None


@contextmanager
def _edge() -> Iterator[None]:
    """Library errors carry facts; here they become one clear line and exit code 2. Anything else is
    a bug: one line and the path of the full trace, exit 3. No traceback reaches the terminal."""
    from pydantic import ValidationError

    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except LecternError as e:
        err.print(f"[red]error:[/red] {shown(str(e))}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except ValidationError as e:  # a flag, LECTERN_* variable or settings.toml value out of range
        for problem in e.errors():
            field = ".".join(str(part) for part in problem["loc"])
            err.print(
                f"[red]error:[/red] invalid setting {shown(field)} = {shown(repr(problem.get('input')))}: "
                f"{shown(problem['msg'])}",
                highlight=False,
            )
        raise typer.Exit(EXIT_USAGE) from None
    except OSError as e:  # a path the user gave (or the data dir) that cannot be used
        where = f": {e.filename}" if e.filename else ""
        err.print(f"[red]error:[/red] {shown((e.strerror or str(e)) + where)}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except Exception as e:
        _internal_error(e)


def _llm_flags(
    backend: str | None, model: str | None, adapter: str | None = None, **more: Any
) -> dict[str, Any]:
    return {"backend": backend, "model": model, "adapter": adapter, **more}


# -- ingestion ----------------------------------------------------------------------------------------
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


def _print_report(report: IngestReport, as_json: bool) -> None:
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


@app.command()
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

    with _edge():
        settings = _settings(
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
        ws = _workspace(collection, settings)
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
        _print_report(report, as_json)
        if not report.ok:
            raise typer.Exit(EXIT_FAILED_FILES)


@app.command()
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

    with _edge():
        settings = _settings(data_dir)
        for name in profile or ["fast", "accurate"]:
            line = prepare_profile(name, settings.ingest.embed, settings.models_dir)
            out.print(shown(line), highlight=False, soft_wrap=True)  # a path stays on one line


@app.command()
def delete(
    sources: Annotated[list[str], typer.Argument(help="Source files to remove from the collection.")],
    collection: CollectionOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Remove documents from a collection, without rebuilding the rest."""
    with _edge():
        ws = _workspace(collection, _settings(data_dir))
        result = ws.delete(sources)
        missing = [s for s, n in result.items() if n < 0]
        for s, n in result.items():
            if n >= 0:
                out.print(f"deleted {shown(s)} ({n} chunks)", highlight=False)
        if missing:
            err.print(f"[red]error:[/red] not in collection {ws.name!r}: {shown(', '.join(missing))}")
            raise typer.Exit(EXIT_FAILED_FILES)


@app.command()
def migrate(
    source: Annotated[str, typer.Option("--from", help="faiss:NAME or milvus:URI/NAME")],
    destination: Annotated[
        str, typer.Option("--to", help="milvus:URI/NAME or faiss:NAME; without /NAME, the source's name")
    ],
    data_dir: DataDir = None,
) -> None:
    """Copy a collection to another store backend, chunks and vectors as they are (no re-embedding)."""
    with _edge():
        from lectern.rag.workspace import migrate_collection

        report = migrate_collection(source, destination, _settings(data_dir))
        out.print(
            f"migrated {report.documents} documents ({report.chunks} chunks) from {shown(report.source)} to "
            f"{shown(report.destination)}; {len(report.unchanged)} already there unchanged",
            highlight=False,
        )


@app.command("list")
def list_documents(
    collection: CollectionOpt = None, data_dir: DataDir = None, as_json: JsonOpt = False
) -> None:
    """List the documents of a collection (or the collections, when there is none yet)."""
    with _edge():
        ws = _workspace(collection, _settings(data_dir))
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


# -- retrieval ---------------------------------------------------------------------------------------
@app.command()
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
    with _edge():
        ws = _workspace(collection, _settings(data_dir))
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


# -- generation ---------------------------------------------------------------------------------------
def _print_citations(answer: Answer | SummaryResult) -> None:
    if answer.citations:
        out.print("\n[bold]Sources[/bold]")
    for c in answer.citations:
        where = Path(c.source).name + (f", {c.location}" if c.location else "")
        if c.ocr:
            where += ", read by OCR: may hold recognition errors"
        out.print(f"[{c.number}] [cyan]{shown(where)}[/cyan]: ", end="", highlight=False)
        if c.highlights:  # the sentences that hold the answer, marked
            out.print(
                " … ".join(f"[bold yellow]{shown(' '.join(h.split()))}[/bold yellow]" for h in c.highlights)
            )
        else:
            quote = " ".join(c.quote.split())
            out.print(f"{shown(quote[:240])}{'…' if len(quote) > 240 else ''}", highlight=False)


def _say_model(ws: Workspace) -> None:
    """Which model answers, on stderr, once: `packaged:auto` says what it picked and why, and
    `llm.backend = "auto"` which backend runs it and why."""
    llm = ws.llm
    why = getattr(llm, "chosen_because", "")
    if why:
        err.print(
            f"[dim]model: {shown(getattr(llm, 'model_name', '?'))} (auto: {shown(why)})[/dim]",
            highlight=False,
        )
    runs = getattr(llm, "backend_because", "")
    if runs:
        err.print(f"[dim]backend: {shown(runs)}[/dim]", highlight=False)


def _print_grounding(answer: Answer) -> None:
    from lectern.rag.qa import grounding_note

    note = grounding_note(answer)
    if note:
        out.print(f"[yellow]{shown(note)}[/yellow]", highlight=False)


def _stream(parts: Iterator[Any]) -> Answer:
    """Print the answer's text as it streams; the final Answer is returned. When the streamed answer
    failed the check (rag.verify) and was replaced, the replacement is printed under a note."""
    from lectern.rag.types import final_answer

    answer = final_answer(parts, lambda text: out.print(shown(text), end="", highlight=False))
    out.print()
    if answer.retried:
        again = "a second try failed too" if answer.abstained else "from the sources' own words"
        out.print(f"[dim](that answer {answer.retried}; {again}:)[/dim]")
        out.print(shown(answer.answer), highlight=False)
    return answer


@app.command()
def ask(
    question: str,
    collection: CollectionOpt = None,
    k: KOpt = None,
    mode: ModeOpt = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens")] = None,
    prompt: PromptOpt = None,
    data_dir: DataDir = None,
    as_json: JsonOpt = False,
    json_schema: Annotated[
        Path | None,
        typer.Option(
            "--json-schema",
            help="Answer with a JSON object that validates against this JSON schema file (it needs a "
            'string "answer"; answer.json_schema); the sources follow on stderr.',
        ),
    ] = None,
    agent: Annotated[
        bool, typer.Option("--agent", help="Let the model search, read and summarize in several steps.")
    ] = False,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="Agent: most model calls.")] = 6,
    token_budget: Annotated[
        int, typer.Option("--token-budget", min=1, help="Agent: most tokens over all model calls.")
    ] = 12000,
    verbose: Annotated[bool, typer.Option("--verbose", help="Agent: print every step.")] = False,
    plan: Annotated[
        bool,
        typer.Option(
            "--plan/--no-plan",
            help="Agent: plan a search per part of the question, then answer once (default; best with "
            "small models); --no-plan: the tool-calling loop, for larger models.",
        ),
    ] = True,
) -> None:
    """Answer a question from the collection, streamed, then the numbered sources."""
    from lectern.rag.limits import check_question

    with _edge():
        check_question(question)  # an empty question is an error before any model loads
        settings = _settings(
            data_dir,
            llm=_llm_flags(backend, model, adapter, max_new_tokens=max_new_tokens),
            retrieval={"k": k, "mode": mode},
            answer={"prompt": prompt, "json_schema": json_schema},
        )
        check_question(question, max_tokens=settings.answer.max_question_tokens)  # a paste: no model yet
        ws = _workspace(collection, settings)
        ws.collection()
        _warn_remote(settings)
        _say_model(ws)
        if agent:
            options = {"max_steps": max_steps, "token_budget": token_budget, "plan": plan}
            _ask_agent(ws, question, as_json, verbose, **options)
            return
        if as_json:
            print_json(ws.ask(question).model_dump_json())
            return
        if json_schema is not None:
            _print_structured(ws.ask(question))
            return
        answer = _stream(ws.stream_ask(question))
        if answer.abstained and not answer.answer.strip():
            out.print(shown(answer.answer), highlight=False)
        _print_citations(answer)
        _print_grounding(answer)


def _print_structured(answer: Answer) -> None:
    """`ask --json-schema`: the JSON object the model wrote under the schema on stdout, the sources
    the chain checked on stderr."""
    from lectern.rag.qa import structured_value

    value = structured_value(answer)
    if value is None:  # the chain abstained before the model was asked
        err.print(
            f"[dim]no model answer ({answer.abstained_by or 'abstained'}): only the chain's answer[/dim]"
        )
        value = {"answer": answer.answer}
    out.print_json(json.dumps(value, ensure_ascii=False))
    for c in answer.citations:
        where = Path(c.source).name + (f", {c.location}" if c.location else "")
        err.print(f"[{c.number}] {shown(where)}", highlight=False)


def _ask_agent(ws: Any, question: str, as_json: bool, verbose: bool, **options: Any) -> None:
    """`ask --agent`: the agent's answer and sources; with --verbose, each step as it was taken."""
    result = ws.agent(**options).invoke(ws.check_question(question))
    if as_json:
        print_json(result.model_dump_json())
        return
    if verbose:
        for step in result.steps:
            if step.kind == "model":
                line = f"{step.number}. model: {step.tokens} tokens, {step.result_chars} chars"
            else:
                args = ", ".join(f"{k}={v!r}" for k, v in step.arguments.items())
                chunks = f", chunks {step.chunks}" if step.chunks else ""
                line = f"{step.number}. {step.tool}({args}) -> {step.result_chars} chars{chunks}"
            if step.error:
                line += f" [error: {step.error}]"
            out.print(f"[dim]{shown(line)} ({step.seconds:.2f}s)[/dim]", highlight=False)
        out.print(f"[dim]stopped by {result.stopped_by}; {result.tokens} tokens[/dim]")
    out.print(shown(result.answer.answer), highlight=False)
    _print_citations(result.answer)
    _print_grounding(result.answer)


@app.command()
def chat(
    collection: CollectionOpt = None,
    conversation: Annotated[
        str, typer.Option("--conversation", help="Conversation id (kept on disk).")
    ] = "default",
    backend: BackendOpt = None,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    prompt: PromptOpt = None,
    data_dir: DataDir = None,
) -> None:
    """A conversation with follow-up questions. /sources shows the last sources, /reset forgets, /quit ends."""
    from lectern.rag.chat import check_conversation_id

    with _edge():
        check_conversation_id(conversation)  # a bad id fails now, not on every question
        settings = _settings(data_dir, llm=_llm_flags(backend, model, adapter), answer={"prompt": prompt})
        ws = _workspace(collection, settings)
        ws.collection()
        _warn_remote(settings)
        _say_model(ws)
        session = ws.chat_session()
        last: Answer | None = None
        out.print(
            f"chatting with collection {ws.name!r} (conversation {conversation}); /sources /reset /quit"
        )
        while True:
            try:
                line = input("you> ").strip()
            except EOFError:
                break
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            if line == "/reset":
                session.reset(conversation)
                out.print("conversation reset")
                continue
            if line == "/sources":
                if last is None:
                    out.print("no answer yet")
                else:
                    _print_citations(last)
                continue
            try:
                ws.check_question(line)
            except LecternError as e:  # refused before the answer starts
                err.print(f"[red]error:[/red] {shown(str(e))}", highlight=False)
                continue
            out.print("lectern> ", end="")
            try:
                last = _stream(session.stream_ask(conversation, line))
                _print_grounding(last)
            except LecternError as e:  # one bad question must not end the conversation
                err.print(f"[red]error:[/red] {shown(str(e))}", highlight=False)


@app.command()
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

    with _edge():
        flags = {"llm": _llm_flags(backend, model, adapter), "summary": {"unsupported": unsupported}}
        ws = _workspace(collection, _settings(data_dir, **flags))
        _warn_remote(ws.settings)
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
    _print_citations(result)
    line = note(result)
    if line:
        style = "yellow" if result.unsupported else "dim"
        out.print(f"\n[{style}]{shown(line)}[/{style}]", highlight=False)
    if result.dropped:
        for sentence in result.unsupported:
            out.print(f"[dim]left out: {shown(sentence)}[/dim]", highlight=False)


# -- evaluation ---------------------------------------------------------------------------------------
@eval_app.command("retrieval")
def eval_retrieval(
    qa_dir: Annotated[Path, typer.Option("--qa-dir", help="A folder laid out like the CMU QA dataset.")],
    mode: ModeOpt = None,
    profile: Annotated[str, typer.Option(help="accurate | fast")] = "accurate",
    data_dir: DataDir = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval quality: article and answer hit@1/5/10, MRR@10, mean query milliseconds."""
    from lectern.rag.evaluate import run_retrieval_eval

    with _edge():
        settings = _settings(data_dir, **{"ingest.embed": {"profile": profile}})
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


@eval_app.command("answers")
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

    with _edge():
        answer = {"prompt": prompt, "context": context, "evidence": evidence}
        settings = _settings(data_dir, llm=_llm_flags(backend, model, adapter), answer=answer)
        _warn_remote(settings)
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


# -- the web UI ----------------------------------------------------------------------------------------
def _exec(argv: list[str], env: dict[str, str]) -> NoReturn:
    """Become `argv`: a SIGTERM to `lectern ui` (a service manager, a container stop) reaches Streamlit
    itself, and no child is left serving when this process is gone."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)


@app.command()
def ui(
    collection: CollectionOpt = None,
    port: Annotated[int, typer.Option(help="Port to serve on.", min=1, max=65535)] = 8501,
    host: Annotated[
        str, typer.Option(help="Address to bind; beyond loopback a password (or --no-password) is required.")
    ] = "127.0.0.1",
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file", help="A file holding the password the UI asks for (or LECTERN_UI_PASSWORD)."
        ),
    ] = None,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="Serve beyond loopback without a password (logged).")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Open the Streamlit web UI (it replaces this process: signals reach Streamlit itself)."""
    import importlib.util

    from lectern.exposure import WEB_UI, bare_host, check_exposure

    with _edge():
        spec = importlib.util.find_spec("lectern.app")
        if spec is None or not spec.submodule_search_locations:
            err.print("[red]error:[/red] the app package is not installed")
            raise typer.Exit(EXIT_USAGE)
        main = Path(next(iter(spec.submodule_search_locations))) / "main.py"
        env = dict(os.environ)
        if password_file is not None:
            env["LECTERN_UI_PASSWORD"] = password_file.read_text(encoding="utf-8").strip()
            if not env["LECTERN_UI_PASSWORD"]:
                raise InvalidInput("--password-file", str(password_file), "the file is empty")
        if not env.get("LECTERN_UI_PASSWORD"):
            env.pop("LECTERN_UI_PASSWORD", None)
        warning = check_exposure(host, WEB_UI, bool(env.get("LECTERN_UI_PASSWORD")), no_password)
        if warning:
            err.print(f"[yellow]warning:[/yellow] {shown(warning)}", highlight=False)
        if data_dir is not None:
            env["LECTERN_DATA_DIR"] = str(data_dir)
        if collection is not None:
            env["LECTERN_COLLECTION"] = collection
        from lectern.serve import listen

        listen(host, port).close()  # in use: one line now, not Streamlit's after it started
    # toolbarMode minimal: a served app, not a developer's session (no "Deploy" button, no dev menu).
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(main), "--server.port", str(port), "--server.address", bare_host(host),
        "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
    ]  # fmt: skip
    _exec(cmd, env)


class _ToStderr(logging.Handler):
    """lectern's own log lines (a writer waiting for the lock, say) as notes on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"[dim]note:[/dim] {shown(record.getMessage())}", highlight=False)


@app.callback()
def _setup() -> None:
    """lectern's log lines go to stderr as notes, once per process."""
    log = logging.getLogger("lectern")
    if not any(isinstance(h, _ToStderr) for h in log.handlers):
        log.addHandler(_ToStderr(logging.INFO))
        log.setLevel(logging.INFO)


# -- LoRA adapters -------------------------------------------------------------------------------------
@app.command()
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

    with _edge():
        if (data is None) == (from_collection is None):
            raise InvalidInput("--data / --from-collection", None, "give exactly one of them")
        settings = _settings(data_dir, llm=_llm_flags("local", model))

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


# -- the API server -------------------------------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; not loopback needs --api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.", min=1, max=65535)] = 8000,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key", envvar="LECTERN_SERVE_API_KEY", help="A key clients must send (repeatable)."
        ),
    ] = None,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Default collection of /v1/summarize.")
    ] = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    max_batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Most requests generated at once (default: 32 on llama.cpp, 8 on transformers; "
            "1: one at a time).",
        ),
    ] = None,
    max_queue: Annotated[int, typer.Option(help="Waiting requests past which the server answers 503.")] = 32,
    insecure_no_api_key: Annotated[
        bool, typer.Option("--insecure-no-api-key", help="Serve a non-loopback address without a key.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
    data_dir: DataDir = None,
) -> None:
    """Serve the model and the collections over an OpenAI-compatible API (/v1/chat/completions...)."""
    from lectern.exposure import API_SERVER, check_exposure
    from lectern.serve import run
    from lectern.serve.app import ServeOptions

    with _edge():
        options = ServeOptions(
            api_keys=tuple(api_key or ()), collection=collection, max_batch=max_batch, max_queue=max_queue
        )  # fmt: skip  (an empty key: refused here)
        check_exposure(host, API_SERVER, bool(options.api_keys), insecure_no_api_key)  # before a model loads
        settings = _settings(data_dir, llm=_llm_flags(backend, model, adapter))
        run(
            settings, host=host, port=port, options=options, insecure=insecure_no_api_key, log_level=log_level
        )


def main() -> None:
    try:
        app()
    except (typer.Exit, typer.Abort):
        raise
    except Exception as e:  # raised outside a command's edge (an import, say): still one line and a file
        try:
            _internal_error(e)
        except typer.Exit as done:
            sys.exit(done.exit_code)


if __name__ == "__main__":
    main()
