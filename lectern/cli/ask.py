"""`lectern ask` and `lectern chat`: an answer streamed, then its numbered sources."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lectern.cli.edge import edge, llm_flags, settings_from_flags, warn_remote, workspace
from lectern.cli.options import (
    AdapterOpt,
    BackendOpt,
    CollectionOpt,
    DataDir,
    JsonOpt,
    KOpt,
    ModelOpt,
    ModeOpt,
    PromptOpt,
)
from lectern.cli.output import err, out, print_json, shown
from lectern.errors import LecternError

if TYPE_CHECKING:
    from lectern.rag.types import Answer, SummaryResult
    from lectern.rag.workspace import Workspace


def print_citations(answer: Answer | SummaryResult) -> None:
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


def say_model(ws: Workspace) -> None:
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


def print_grounding(answer: Answer) -> None:
    from lectern.rag.qa import grounding_note

    note = grounding_note(answer)
    if note:
        out.print(f"[yellow]{shown(note)}[/yellow]", highlight=False)


def print_stream(parts: Iterator[Any]) -> Answer:
    """Print the answer's text as it streams; the final Answer is returned. When the streamed words
    were replaced (asked again, rag.verify) or withdrawn (the subject check), a note says why and the
    final answer follows."""
    from lectern.rag.types import final_answer
    from lectern.rag.verify import why_changed

    answer = final_answer(parts, lambda text: out.print(shown(text), end="", highlight=False))
    out.print()
    why = why_changed(answer)
    if why:
        out.print(f"[dim](that answer {why}:)[/dim]")
        out.print(shown(answer.answer), highlight=False)
    return answer


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

    with edge():
        check_question(question)  # an empty question is an error before any model loads
        settings = settings_from_flags(
            data_dir,
            llm=llm_flags(backend, model, adapter, max_new_tokens=max_new_tokens),
            retrieval={"k": k, "mode": mode},
            answer={"prompt": prompt, "json_schema": json_schema},
        )
        check_question(question, max_tokens=settings.answer.max_question_tokens)  # a paste: no model yet
        ws = workspace(collection, settings)
        ws.collection()
        warn_remote(settings)
        say_model(ws)
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
        answer = print_stream(ws.stream_ask(question))
        if answer.abstained and not answer.answer.strip():
            out.print(shown(answer.answer), highlight=False)
        print_citations(answer)
        print_grounding(answer)


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
    print_citations(result.answer)
    print_grounding(result.answer)


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

    with edge():
        check_conversation_id(conversation)  # a bad id fails now, not on every question
        settings = settings_from_flags(
            data_dir, llm=llm_flags(backend, model, adapter), answer={"prompt": prompt}
        )
        ws = workspace(collection, settings)
        ws.collection()
        warn_remote(settings)
        say_model(ws)
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
                    print_citations(last)
                continue
            try:
                ws.check_question(line)
            except LecternError as e:  # refused before the answer starts
                err.print(f"[red]error:[/red] {shown(str(e))}", highlight=False)
                continue
            out.print("lectern> ", end="")
            try:
                last = print_stream(session.stream_ask(conversation, line))
                print_grounding(last)
            except LecternError as e:  # one bad question must not end the conversation
                err.print(f"[red]error:[/red] {shown(str(e))}", highlight=False)
