"""The `lectern` command line: parse, call the Python API, render. Errors become one sentence and a code.

Exit codes (also in `lectern --help` and the README): 0 done; 1 some files failed and were reported
(`ingest`; `delete` of unknown sources); 2 usage or configuration error, or input lectern cannot
use (a bad flag, setting, name or question); 3 internal error: one line on stderr and the path
of a file with the full trace.

One module per command group, each command a function registered here, in the order of `--help`:

    ingest.py     ingest, prepare, delete, migrate, list
    search.py     search
    ask.py        ask, chat (and the answer's sources, printed)
    summarize.py  summarize
    eval.py       eval retrieval, eval answers
    ui.py         ui
    tune.py       tune
    serve.py      serve
    edge.py       flags to settings; errors to one line and an exit code
    options.py    the flags several commands share
    output.py     consoles, escaped user text, JSON

Heavy imports (torch, transformers, faiss) happen inside the commands, so `lectern --help` is quick.
"""

from __future__ import annotations

import logging
import sys

import typer

from lectern.cli import ask, ingest, search, serve, summarize, tune, ui
from lectern.cli import eval as evaluate
from lectern.cli.edge import internal_error
from lectern.cli.output import NotesToStderr

HELP = """lectern: private, local RAG over your documents.

Exit codes: 0 done; 1 some files failed and were reported (ingest, delete); 2 usage or """ + (
    """configuration error, or input lectern cannot use; 3 internal error (one line, and the file """
    """holding the full trace)."""
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help=HELP)
eval_app = typer.Typer(no_args_is_help=True, help="Measure retrieval and answer quality on a QA set.")
app.add_typer(eval_app, name="eval")

app.command()(ingest.ingest)
app.command()(ingest.prepare)
app.command()(ingest.delete)
app.command()(ingest.migrate)
app.command("list")(ingest.list_documents)
app.command()(search.search)
app.command()(ask.ask)
app.command()(ask.chat)
app.command()(summarize.summarize)
eval_app.command("retrieval")(evaluate.eval_retrieval)
eval_app.command("answers")(evaluate.eval_answers)
app.command()(ui.ui)


@app.callback()
def _setup() -> None:
    """lectern's log lines go to stderr as notes, once per process."""
    log = logging.getLogger("lectern")
    if not any(isinstance(h, NotesToStderr) for h in log.handlers):
        log.addHandler(NotesToStderr(logging.INFO))
        log.setLevel(logging.INFO)


app.command()(tune.tune)
app.command()(serve.serve)


def main() -> None:
    try:
        app()
    except (typer.Exit, typer.Abort):
        raise
    except Exception as e:  # raised outside a command's edge (an import, say): still one line and a file
        try:
            internal_error(e)
        except typer.Exit as done:
            sys.exit(done.exit_code)
