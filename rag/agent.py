"""The agent: a tool-calling loop over langchain-core messages, for questions one retrieve-then-answer
pass cannot answer (two documents, two parts of one, a summary then a lookup).

    result = ws.agent().invoke("Compare what the two manuals say about the pump")
    result.answer      # an Answer, cited like the QA chain's (rag.qa.cited_answer)
    result.steps       # every model call and tool call: tool, arguments, result size, time

The loop: it starts with `search(question)` already called (`first_search`; small models otherwise
answer from memory); the model sees the tools; each reply's tool calls run and their results go back as
ToolMessages; a reply without a tool call is the answer. Bounded by `max_steps` model calls and a
`token_budget` (prompt plus answer tokens over all model calls, counted by the model's own
tokenizer) and the model's context window. When the steps run out the model is asked once more to answer without tools, if the
budget allows; when the budget runs out the agent abstains. A malformed tool call, an unknown tool
or a tool's error goes back to the model as an error result: it never ends the run.

`plan` (plan and execute, for small models): one model call without tools names the searches the
question needs, one per subject (a question about two people gets one search each, which a small
model seldom thinks of calling itself). The plan is read as a list of subjects (rag.plan: labels,
websites and generic words dropped, a line naming two subjects split), and each subject the question
itself names is searched even when the plan is unusable. The searches run beside the question's own,
and the answer is written as the QA chain writes one, from the best sentences of everything found
plus each search's own best (rag.subjects.quota_sentences), with its answer check, but without its
evidence gate, which wants the whole question's words in one chunk. No tool loop follows: two or
three model calls. When the question names several subjects ("Where were Klimt and Mondrian
born?"), each is asked about alone ("Where were Gustav Klimt born?", or its part of a two-part
question) over its own passages, one model call each, and the answers are joined: a small model
asked for two facts states one. A bridge ("..., and in what year did that city host the Olympic
Games?", rag.plan.bridge) is asked hop by hop: the first part, then a search for the name its answer
gives, then the second part about that name. The agent abstains (abstained_by="missing_subject") when no passage
shown is about a subject, when a subject's answer abstains, or when the joined answer gives one of
them no fact from its own passages (rag.subjects.misattributed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.tool import tool_call
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field, ValidationError

from lectern.errors import LecternError
from lectern.rag.citations import renumber_citations
from lectern.rag.llm.base import check_stop
from lectern.rag.plan import (
    PLAN_SEARCHES,
    Subject,
    bridge,
    plan_queries,
    plan_subjects,
    question_subjects,
    questions_apart,
)
from lectern.rag.prompts import AGENT_FINAL, AGENT_PLAN, AGENT_SYSTEM, NO_ANSWER
from lectern.rag.qa import Corpus, QAChain, QAOptions, cited_answer
from lectern.rag.sentences import TermWeights
from lectern.rag.subjects import misattributed, missing_subjects, passages_of, quota_sentences
from lectern.rag.tools import SourceBook
from lectern.rag.types import AbstainReason, Answer, Citation, Context
from lectern.rag.window import generation_kwargs

StopReason = Literal["answer", "steps", "budget"]
PLAN_TOKENS = 64  # a plan is a few short lines

__all__ = ["PLAN_SEARCHES", "Agent", "AgentResult", "Step", "build_agent", "plan_queries"]


class Step(BaseModel):
    """One step of the trace: a model call (`tool` None) or a tool call."""

    number: int
    kind: Literal["model", "tool"]
    tool: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    result_chars: int = 0  # the size of what the step produced (tool result or model reply)
    chunks: list[int] = Field(default_factory=list)  # the [n] of the chunks a tool returned
    tokens: int = 0  # model calls: prompt plus reply tokens
    seconds: float = 0.0
    error: str | None = None


def _add_step(steps: list[Step], seconds: float, **fields: Any) -> None:
    """The trace's next step, numbered after the others."""
    steps.append(Step(number=len(steps) + 1, seconds=round(seconds, 3), **fields))


class AgentResult(BaseModel):
    answer: Answer
    steps: list[Step] = Field(default_factory=list)
    stopped_by: StopReason = "answer"
    tokens: int = 0  # spent over all model calls
    subjects: list[str] = Field(default_factory=list)  # plan: the subjects the question names
    missing: list[str] = Field(default_factory=list)  # plan: those whose fact the answer lacks

    @property
    def tool_calls(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "tool"]


class Agent:
    """The loop over `llm` (which must support `bind_tools`) and `tools`, numbering chunks in `book`."""

    def __init__(
        self,
        llm: BaseChatModel,
        tools: Sequence[BaseTool],
        book: SourceBook,
        *,
        max_steps: int = 6,
        token_budget: int = 12000,
        max_new_tokens: int | None = None,
        options: QAOptions | None = None,
        term_weights: TermWeights | None = None,
        first_search: bool = True,
        plan: bool = False,
    ) -> None:
        self.llm = llm
        self.tools = {t.name: t for t in tools}
        self.book = book
        self.max_steps = max_steps
        self.token_budget = token_budget
        # how the plan's answer is written (the QA chain's options: rag.workspace.qa_options), and the
        # length of every reply (max_new_tokens, when given, replaces the options')
        options = options or QAOptions()
        if max_new_tokens is not None:
            options = replace(options, max_new_tokens=max_new_tokens)
        self.options = options
        self.max_new_tokens = options.max_new_tokens
        self.term_weights = term_weights
        self.first_search = first_search and "search" in self.tools
        self.plan = plan and self.first_search
        self.bound = llm.bind_tools(list(tools))  # ToolsUnsupported for a template without tools
        self.steps: list[Step] = []

    def initial(self, question: str) -> list[BaseMessage]:
        """The conversation the loop starts from."""
        return [SystemMessage(AGENT_SYSTEM), HumanMessage(question)]

    def invoke(self, question: str) -> AgentResult:
        self._done: set[tuple[str, str]] = set()  # (tool, arguments) run so far
        messages = self.initial(question)
        steps: list[Step] = []
        self.steps = steps  # the trace so far, read while invoke runs (the web UI shows each step)
        spent = 0
        if self.first_search:
            # Small models (Qwen2.5 0.5B) often answer from memory without calling a tool: the
            # loop starts with search(question) done for them, shown as their own first call, and
            # with the plan's searches beside it.
            queries = [question]
            planned: list[Subject] = []
            if self.plan:
                planned, used = self._plan(question, steps, spent)
                queries += [s.query for s in planned]
                spent += used
            calls = [
                tool_call(name="search", args={"query": q}, id=f"call_{i}") for i, q in enumerate(queries)
            ]
            seed = AIMessage("", tool_calls=calls)
            messages += [seed, *self._run_tools(seed, steps)]
            if self.plan:
                return self._execute(question, planned, steps, spent)
        final: str | None = None
        stopped: StopReason = "steps"
        for _ in range(self.max_steps):
            reply, used = self._call(self.bound, messages, steps, spent)
            if reply is None:
                stopped = "budget"
                break
            spent += used
            messages.append(reply)
            if not reply.tool_calls and not reply.invalid_tool_calls:
                final, stopped = reply.text, "answer"
                break
            messages.extend(self._run_tools(reply, steps))
        if final is None and stopped == "steps":
            reply, used = self._call(self.llm, [*messages, HumanMessage(AGENT_FINAL)], steps, spent)
            if reply is None:
                stopped = "budget"
            else:
                spent += used
                final = reply.text
        answer = cited_answer(
            question, self.book.contexts, final or NO_ANSWER, term_weights=self.term_weights
        )
        if final is None:
            answer.abstained, answer.answer, answer.citations = True, NO_ANSWER, []
        return AgentResult(answer=answer, steps=steps, stopped_by=stopped, tokens=spent)

    def _execute(self, question: str, planned: list[Subject], steps: list[Step], spent: int) -> AgentResult:
        """The plan's answer: the QA chain (rag.qa.QAChain) over the best sentences of everything found
        and of each planned search (a quota each), asked once, or once per subject over the subject's
        own passages; then each subject's fact checked in the answer."""
        found = self.book.contexts
        by_number = {c.number: c for c in found}
        searches = [s for s in steps if s.kind == "tool"][-len(planned) :] if planned else []
        shown = quota_sentences(
            question,
            found,
            [(p, [by_number[n] for n in s.chunks]) for p, s in zip(planned, searches, strict=True)],
            self.term_weights,
        )
        subjects = question_subjects(question, [f"{c.title or ''}\n{c.text}" for c in found])
        chunks = {c.chunk_id: c for c in found}

        def result(
            answer: Answer, stopped: StopReason = "answer", missing: list[str] | None = None
        ) -> AgentResult:
            return AgentResult(
                answer=answer, steps=steps, stopped_by=stopped, tokens=spent,
                subjects=list(subjects.names), missing=missing or [],
            )  # fmt: skip

        if len(subjects.names) >= 2 and (missing := missing_subjects(subjects.names, shown, chunks)):
            # nothing was found for a subject: no answer could give its fact, so the model is not asked
            return result(_abstained(question, "missing_subject", shown), missing=missing)
        prompt = self.llm.get_num_tokens(" ".join([question, *(c.text for c in shown)]))
        if spent + prompt + self.max_new_tokens > self.token_budget:
            return result(_abstained(question), "budget")
        options = replace(
            self.options,
            k=None,  # the searches found and cut what is shown: all of it goes
            min_score=0.0,
            context="chunks",  # the sentences are chosen above, a quota per search
            evidence=False,
            structured=False,  # the answer is prose, as the tool loop's (its model decodes no schema)
            # several subjects: each one's fact is judged below (misattributed), not the chain's
            # one-subject check, which wants most of the question's names in one cited chunk
            subject=len(subjects.names) < 2,
        )
        asked_before: dict[str, Answer] = {}

        def ask(asked: str, passages: Sequence[Context]) -> Answer:
            """The QA chain's answer to `asked` over `passages`, one model call, as a step."""
            nonlocal spent
            if asked in asked_before:
                return asked_before[asked]
            found_docs = _Found(docs=[c.to_document() for c in passages])
            chain = QAChain(self.llm, found_docs, options, Corpus(term_weights=self.term_weights))
            start = time.perf_counter()
            part = chain.invoke(asked)
            part.contexts = [c.model_copy(update={"excerpt": True}) for c in part.contexts]
            shown_text = " ".join(c.text for c in part.contexts)  # the sentences the prompt showed
            used = self.llm.get_num_tokens(f"{asked} {shown_text} {part.raw or part.answer}")
            _add_step(
                steps, time.perf_counter() - start, kind="model", result_chars=len(part.answer), tokens=used
            )
            spent += used
            asked_before[asked] = part
            return part

        answers: list[Answer] = []
        hop = bridge(question)
        if hop is not None:
            # the second part asks about the first part's answer ("that city"): the first is asked,
            # the thing its answer names is searched for, and the second asked about it by name
            first = ask(hop.first, quota_sentences(hop.first, found, [], self.term_weights))
            entity = None if first.abstained else hop.entity(first.answer)
            if entity is None:  # the first part is not found, or its answer names no one to ask about
                abstained = _abstained(question, first.abstained_by or "missing_subject", first.contexts)
                abstained.raw = first.raw
                return result(abstained)
            then = hop.then(entity)
            # what a search by name finds, and the passages the first answer came from (the second
            # fact is often beside the first: "Boulton, who owned the Soho foundry works near Birmingham")
            near = [chunks[c.chunk_id] for c in first.contexts if c.chunk_id in chunks]
            answers = [first, ask(then, self._search(then, steps, near))]
        if not answers:
            # a small model asked for two facts states one: each subject (over its own passages) or
            # each part is asked about alone, one model call each, and the answers are joined
            asks = [
                (asked, passages_of(name, subjects.names, shown, chunks) if name else shown)
                for asked, name in questions_apart(question, subjects)
            ] or [(question, shown)]
            answers = [ask(asked, passages) for asked, passages in asks]
        if len(answers) > 1 and (gaps := [a for a in answers if a.abstained]):
            # a subject's or a part's fact is missing: the whole answer is, as it says why
            unanswered = [n for n, a in zip(subjects.names, answers, strict=False) if a.abstained]
            reason = "missing_subject" if subjects.names else gaps[0].abstained_by
            abstained = _abstained(question, reason, [c for a in answers for c in a.contexts])
            abstained.raw = "\n".join(a.raw for a in answers)
            return result(abstained, missing=unanswered)
        answer = answers[0] if len(answers) == 1 else joined(question, answers)
        if answer.abstained:
            return result(answer)
        wrong = misattributed(answer.answer, question, subjects, answer.contexts, chunks)
        if wrong:  # a subject's fact is not in its own passages, or not given at all
            update = {"answer": NO_ANSWER, "citations": [], "abstained": True, "support": None}
            answer = answer.model_copy(update={**update, "abstained_by": "missing_subject"})
        return result(answer, missing=wrong)

    def _search(self, query: str, steps: list[Step], beside: Sequence[Context] = ()) -> list[Context]:
        """The best sentences for `query` of what a search for it finds (run as a step of the trace,
        its chunks numbered in the book after the others) and of the chunks `beside`."""
        call = AIMessage("", tool_calls=[tool_call(name="search", args={"query": query}, id="call_bridge")])
        self._run_tools(call, steps)
        by_number = {c.number: c for c in self.book.contexts}
        found = [by_number[n] for n in steps[-1].chunks if n in by_number]
        seen = {c.chunk_id for c in found}
        found += [c for c in beside if c.chunk_id not in seen]
        return quota_sentences(query, found, [], self.term_weights)

    def _plan(self, question: str, steps: list[Step], spent: int) -> tuple[list[Subject], int]:
        """The plan's subjects and their searches (rag.prompts.AGENT_PLAN, one model call without
        tools, read by rag.plan.plan_subjects), and its tokens. A plan that cannot be read, or no
        plan (the budget), still searches the subjects the question names."""
        prompt: list[BaseMessage] = [HumanMessage(AGENT_PLAN.format(question=question))]
        reply, used = self._call(self.llm, prompt, steps, spent, max_new_tokens=PLAN_TOKENS)
        return plan_subjects(reply.text if reply is not None else "", question), used

    def _call(
        self,
        model: Any,
        messages: list[BaseMessage],
        steps: list[Step],
        spent: int,
        max_new_tokens: int | None = None,
    ) -> tuple[AIMessage | None, int]:
        """One model call and its step, or (None, 0) when it would overrun the token budget or the
        model's context window; `max_new_tokens` (default the agent's) bounds the reply."""
        check_stop()  # a stop asked (rag.llm.base.stoppable) ends the run here, its steps kept in self.steps
        limit = max_new_tokens or self.max_new_tokens
        tools = list(self.tools.values()) if model is self.bound else None
        prompt = self.llm.get_num_tokens_from_messages(messages, tools=tools)
        window = getattr(self.llm, "context_window", None)
        if spent + prompt + limit > self.token_budget or (window and prompt + limit > window):
            return None, 0
        start = time.perf_counter()
        reply = model.invoke(messages, **generation_kwargs(self.llm, limit))
        seconds = time.perf_counter() - start
        if not isinstance(reply, AIMessage):
            reply = AIMessage(content=str(getattr(reply, "content", reply)))
        written = self.llm.get_num_tokens(reply.text) + sum(
            self.llm.get_num_tokens(str(c["args"])) for c in reply.tool_calls
        )
        used = prompt + written
        error = "; ".join(str(c.get("error")) for c in reply.invalid_tool_calls) or None
        _add_step(steps, seconds, kind="model", result_chars=len(reply.text), tokens=used, error=error)
        return reply, used

    def _run_tools(self, reply: AIMessage, steps: list[Step]) -> list[ToolMessage]:
        """Each tool call's result (or its error) as a ToolMessage, each recorded as a step."""
        results: list[ToolMessage] = []
        for bad in reply.invalid_tool_calls:
            why = f"the tool call could not be read ({bad.get('error')}); write it as valid JSON"
            results.append(ToolMessage(why, tool_call_id=bad.get("id") or "", status="error"))
            _add_step(steps, 0.0, kind="tool", tool=bad.get("name"), error=why)
        for call in reply.tool_calls:
            check_stop()
            start = time.perf_counter()
            tool = self.tools.get(call["name"])
            chunks: list[int] = []
            error: str | None = None
            key = (call["name"], json.dumps(call["args"], sort_keys=True, default=str))
            if key in self._done:  # small models repeat a call instead of answering
                error = "already called with these arguments: its results are above; answer from them now"
                message = ToolMessage(error, tool_call_id=call["id"] or "", status="error")
            elif tool is None:
                error = f"unknown tool {call['name']!r}; known: {', '.join(sorted(self.tools))}"
                message = ToolMessage(error, tool_call_id=call["id"] or "", status="error")
            else:
                try:
                    message = tool.invoke(call)
                    chunks = [c.number for c in (message.artifact or [])]
                    self._done.add(key)
                except (LecternError, ValidationError, ValueError) as failure:
                    error = " ".join(str(failure).split())[:300]
                    message = ToolMessage(f"error: {error}", tool_call_id=call["id"] or "", status="error")
            results.append(message)
            _add_step(
                steps, time.perf_counter() - start, kind="tool", tool=call["name"],
                arguments=dict(call["args"]), result_chars=len(message.text), chunks=chunks, error=error,
            )  # fmt: skip
        return results


class _Found(BaseRetriever):
    """The chunks the plan's searches found, handed to the QA chain as its retrieval."""

    docs: list[Document]

    def _get_relevant_documents(self, query: str, *, run_manager: Any = None) -> list[Document]:
        return list(self.docs)


def joined(question: str, answers: Sequence[Answer]) -> Answer:
    """One answer from the answers about each subject: their sentences in turn, their passages
    numbered once each ([n] markers and citations renumbered to match)."""
    contexts: list[Context] = []
    numbers_of: dict[tuple[str, str], int] = {}
    texts: list[str] = []
    citations: dict[int, Citation] = {}
    for answer in answers:
        new: dict[int, int] = {}
        for ctx in answer.contexts:
            key = (ctx.chunk_id, ctx.text)
            if key not in numbers_of:
                numbers_of[key] = len(contexts) + 1
                contexts.append(ctx.model_copy(update={"number": numbers_of[key]}))
            new[ctx.number] = numbers_of[key]
        texts.append(renumber_citations(answer.answer, new))
        for citation in answer.citations:
            number = new.get(citation.number, citation.number)
            citations.setdefault(number, citation.model_copy(update={"number": number}))
    supports = [a.support for a in answers if a.support is not None]
    return Answer(
        question=question, answer=" ".join(t.strip() for t in texts), citations=list(citations.values()),
        contexts=contexts, raw="\n".join(a.raw for a in answers), support=min(supports, default=None),
    )  # fmt: skip


def _abstained(
    question: str, reason: AbstainReason | None = None, contexts: list[Context] | None = None
) -> Answer:
    return Answer(
        question=question, answer=NO_ANSWER, abstained=True, abstained_by=reason, contexts=contexts or []
    )


def build_agent(llm: BaseChatModel, tools: Sequence[BaseTool], book: SourceBook, **options: Any) -> Agent:
    """The agent runnable-alike: `.invoke(question) -> AgentResult`. Options are Agent's."""
    return Agent(llm, tools, book, **options)
