"""The agent's plan: the subjects a question asks about, each with the search that names it.

    plan_queries("Searches: Koalas, giant pandas", question)     -> ["Koalas", "giant pandas"]
    question_subjects("Where were Gustav Klimt and Piet Mondrian born?").names
                                                                 -> ["Gustav Klimt", "Piet Mondrian"]
    plan_subjects(model_plan, question)                          -> [Subject(name, query), ...]

A 0.5B model's plan is often not a list of searches: it names websites ("Google Images, Wikipedia
articles"), writes labels ("Google Search:", "Query 1:"), puts two subjects on one line, or repeats
the question. `plan_queries` reads what is usable; `question_subjects` finds the subjects in the
question itself, without a model (the names joined by "and"/"or", or the first name of each part of
a two-part question), so that each one is searched even when the plan is unusable.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from lectern.ingest import bm25_terms
from lectern.rag.citations import is_abstention
from lectern.rag.verify import YES_NO

PLAN_SEARCHES = 3  # at most this many searches from the plan, beside the question's own
MAX_SEARCH_WORDS = 12  # a longer line is a sentence, not a search
REPEATS_QUESTION = 0.8  # a search holding this share of the question's words is the question again


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Where to search and what to call the results, not what to search for: dropped from a planned search.
ENGINES = _words(
    "google bing yahoo duckduckgo baidu wikipedia wiki britannica encyclopedia encyclopaedia youtube "
    "internet online web website websites site sites webpage webpages url urls"
)
GENERIC = _words(
    "search searches query queries images image pictures photos videos maps articles article information "
    "info results sources source facts details data page pages documents document keywords keyword"
)
# A label before a search: "Search:", "Searches:", "Google Search:", "Query 1:", "Step 2 -", "Subject:".
_LABEL = re.compile(
    r"^(?:(?:google|bing|web|wikipedia)\s+)?"
    r"(?:search(?:es)?|quer(?:y|ies)|steps?|subjects?|topics?|keywords?|terms?)\s*\d*\s*[:.)\-–]\s*",
    re.IGNORECASE,
)
_MARK = re.compile(r"^(?:[-*•·>#]+|\(?\d+\s*[.):\]]|\(\d+\)|[a-z]\))\s*", re.IGNORECASE)
_VERB = re.compile(r"^(?:search\s+(?:for|on)|look\s+up|find(?:\s+out)?|google)\s+", re.IGNORECASE)
_URL = re.compile(r"https?://\S+|www\.\S+|\b[\w.-]+\.(?:com|org|net|edu|gov|io)(?:/\S*)?", re.IGNORECASE)
_QUOTES = "\"'`“”‘’*"
# One line naming several subjects: "Koalas, giant pandas", "Klimt and Mondrian", "X; Y", "X / Y".
_LIST = re.compile(r"\s*[,;/|]\s*|\s+(?:and|or|&|vs\.?|versus)\s+", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_][\w'’.\-]*|\d[\w'’.\-]*|[^\w\s]")

# Words that start a question or an order, not a name, though capitalised at its start.
_OPENERS = bm25_terms.STOPWORDS | {"name", "list", "tell", "describe", "compare", "give", "explain", "state"}
# Lower-case words inside a name: "Leonardo da Vinci", "Battle of Singapore", "Vincent van Gogh".
_CONNECTORS = _words("of de da di del della van von der den du la le y")
# A part that says "he" or "that city" asks about a subject named before it.
_PRONOUNS = _words("he she it they his her its their him them that this these those")
# A two-part question: "..., and in which county was Lincoln born?", "...; what is ...", "... and when ...".
_CLAUSE = re.compile(
    r",\s*(?:and|but)\s+|;\s*|\s+and\s+(?=(?:what|which|who|whom|whose|where|when|why|how|in|on|at|"
    r"since|for|from|to|by|into|until)\b)",
    re.IGNORECASE,
)
_AUX = _words("do does did")
# A question about what ties its subjects together, which no one of them answers alone.
_RELATION = re.compile(
    r"\b(?:between|among|in common|relate|related|compare|compared|differ|difference)\b", re.IGNORECASE
)
_ARTICLES = _words("the a an")


@dataclass(frozen=True)
class Subject:
    """One thing the question asks about (or the plan adds), the search that names it, and the part
    of the question that asks about it ("" for the whole question)."""

    name: str
    query: str
    asks: str = ""


@dataclass(frozen=True)
class Subjects:
    """The subjects a question names, in its order; `parts`: the part of the question that asks about
    each, when it has parts ("When did Ghana ...", "since when has Egypt ..."); `comparison`: it asks
    which of them ("Which is older, X or Y?"), so the answer names one and states no fact for the other."""

    names: tuple[str, ...] = ()
    comparison: bool = False
    parts: tuple[str, ...] = ()

    def part(self, name: str) -> str:
        """The part of the question about `name`, or "" (the whole question asks about each)."""
        return dict(zip(self.names, self.parts, strict=False)).get(name, "")


def name_terms(name: str) -> list[str]:
    """A name's words as lectern compares them (stemmed, stop words dropped), in order."""
    return bm25_terms.terms(name)


def names(text: str, name: str) -> bool:
    """Whether `text` names `name`: it holds the name's last word ("Klimt", "pandas") and at least
    half of its words, so "Gustav Mahler" does not name "Gustav Klimt"."""
    wanted = name_terms(name)
    if not wanted:
        return False
    held = set(bm25_terms.terms(text))
    return wanted[-1] in held and 2 * len(held & set(wanted)) >= len(set(wanted))


def _clean(part: str) -> str:
    """A planned search without URLs, engines, generic words, quotes and loose small words."""
    part = _URL.sub(" ", part)
    words = [w for w in part.split() if w.strip(_QUOTES + ".,:;()!?").lower() not in ENGINES | GENERIC]
    while words and (words[0].lower() in bm25_terms.STOPWORDS or not words[0].strip(_QUOTES + ":-–.,")):
        words.pop(0)
    while words and (words[-1].lower() in bm25_terms.STOPWORDS or not words[-1].strip(_QUOTES + ":-–.,")):
        words.pop()
    return " ".join(words).strip(_QUOTES + " :-–,;.?!")


def _repeats(words: Collection[str], asked: set[str]) -> bool:
    """Whether a search is the question again, whole or nearly (REPEATS_QUESTION of its words)."""
    held = set(words) & asked
    return bool(asked) and (held == asked or len(held) >= REPEATS_QUESTION * len(asked) > 2)


def _strip_labels(line: str) -> str:
    """The line without list marks, labels ("Google Search:") and leading verbs ("look up"), repeatedly."""
    previous = None
    line = line.strip()
    while line != previous:
        previous = line
        line = line.strip().lstrip(_QUOTES).strip()
        line = _MARK.sub("", line)
        line = _LABEL.sub("", line)
        line = _VERB.sub("", line)
    return line.strip()


def plan_queries(text: str, question: str, limit: int = PLAN_SEARCHES) -> list[str]:
    """The usable searches of a plan, at most `limit`: labels, list marks and quotes stripped, a line
    naming several subjects split into one search each; websites, search engines and generic words
    dropped; none repeated, none that repeats the question, none longer than a short phrase."""
    asked = set(bm25_terms.terms(question))
    seen: list[set[str]] = []
    out: list[str] = []
    for line in text.splitlines():
        raw = line.strip()
        if not raw or raw.endswith(":") or len(raw) > 200:  # "Here are the searches:"
            continue
        body = _strip_labels(re.sub(r"[*`]+", "", raw))
        if not body or is_abstention(body, cited=False) or asked <= set(bm25_terms.terms(body)):
            continue  # no plan, or the question itself (a list of its subjects is split below)
        for part in _LIST.split(_URL.sub(lambda m: " " * len(m.group()), body)):
            query = _clean(part)
            words = set(bm25_terms.terms(query))
            if not words or len(query.split()) > MAX_SEARCH_WORDS or words in seen:
                continue
            if _repeats(words, asked):
                continue
            if not words & asked and not any(w[:1].isupper() for w in query.split()):
                continue  # shares no word with the question and names nothing: not about it
            seen.append(words)
            out.append(query)
            if len(out) == limit:
                return out
    return out


@dataclass(frozen=True)
class _Run:
    """A run of capitalised words (a name) in a question: its text and token positions."""

    text: str
    start: int
    end: int  # exclusive


def _runs(tokens: Sequence[str]) -> list[_Run]:
    """The names in a tokenised text: capitalised words, with "of", "da", "van" inside; a possessive
    ends one ("Roosevelt's African safari": "Roosevelt")."""
    runs: list[_Run] = []
    i = 0
    while i < len(tokens):
        word = tokens[i]
        opener = (i == 0 or tokens[i - 1] in (".", "?", "!", ":")) and word.lower() in _OPENERS
        if not word[:1].isupper() or opener or word.lower() in bm25_terms.STOPWORDS or word == "I":
            i += 1
            continue
        parts: list[str] = []
        j = i
        while j < len(tokens):
            w = tokens[j]
            if w[:1].isupper():
                possessive = re.sub(r"['’]s?$", "", w)
                parts.append(possessive.rstrip(".") if len(possessive) > 2 else possessive)
                j += 1
                if possessive != w:
                    break
            elif w.lower() in _CONNECTORS and j + 1 < len(tokens) and tokens[j + 1][:1].isupper() and parts:
                parts.append(w)
                j += 1
            else:
                break
        runs.append(_Run(" ".join(parts), i, j))
        i = j
    return runs


def name_runs(text: str) -> list[str]:
    """The capitalised names in `text`, first word of a question aside, without repeats."""
    out: list[str] = []
    for run in _runs(_WORD.findall(text)):
        if name_terms(run.text) and run.text not in out:
            out.append(run.text)
    return _merged(out)


def _merged(found: Sequence[str]) -> list[str]:
    """Names without repeats: one whose words are all in another ("Lincoln", "Abraham Lincoln") goes."""
    out: list[str] = []
    for name in found:
        words = set(name_terms(name))
        if not words or any(words <= set(name_terms(o)) for o in out):
            continue
        out = [o for o in out if not set(name_terms(o)) <= words]
        out.append(name)
    return out


def _coordinated(tokens: Sequence[str]) -> tuple[list[str], bool]:
    """The longest list of names joined by ",", "and", "or" ("Gustav Klimt and Piet Mondrian"), and
    whether it ends with "or"; ([], False) when no two names are joined."""
    runs = _runs(tokens)
    best: list[_Run] = []
    best_or = False
    group: list[_Run] = runs[:1]
    group_or = False
    for prev, run in itertools.pairwise(runs):
        between = [t.lower() for t in tokens[prev.end : run.start]]
        if between and all(t in {",", "and", "or", "&"} for t in between) and len(between) <= 2:
            group.append(run)
            group_or = "or" in between
        else:
            group, group_or = [run], False
        if len(group) > len(best):
            best, best_or = list(group), group_or
    return ([r.text for r in best], best_or) if len(best) >= 2 else ([], False)


def _lower_coordinated(tokens: Sequence[str]) -> tuple[list[str], bool]:
    """Two lower-case subjects around "and"/"or" ("What do koalas and giant pandas eat?"): up to three
    words either side, stopping at a small word or a comma ("the" after "and" skipped); when "do",
    "does" or "did" comes before them, or the question ends in a participle ("born"), the verb is
    last ("eat", "belong", "lie on"), and it is not part of the second subject."""
    words = [t for t in tokens if t not in "?!."]
    for k, word in enumerate(words):
        if word.lower() not in ("and", "or") or k == 0:
            continue
        left: list[str] = []
        for w in reversed(words[max(0, k - 3) : k]):
            if w.lower() in bm25_terms.STOPWORDS or not w[:1].isalpha():
                break
            left.insert(0, w)
        after = words[k + 1 :]
        while after and after[0].lower() in _ARTICLES:
            after = after[1:]
        right: list[str] = []
        for w in after[:3]:
            if w.lower() in bm25_terms.STOPWORDS or not w[:1].isalpha():
                break
            right.append(w)
        to_end = all(w.lower() in bm25_terms.STOPWORDS for w in after[len(right) :])
        participle = words[-1].lower().endswith(("ed", "born"))
        verb_last = participle or any(w.lower() in _AUX for w in words[: k - len(left)])
        if to_end and verb_last and len(right) > 1:
            right.pop()
        if left and right:
            return [" ".join(left), " ".join(right)], word.lower() == "or"
    return [], False


def _parallel(clauses: Sequence[str]) -> list[str]:
    """The subjects of parallel parts that name nothing ("What is a male otter called, and what is a
    male swan called?"): each part's one or two words that the other parts lack; [] otherwise."""
    words = [[w for w in _WORD.findall(c) if bm25_terms.terms(w)] for c in clauses]
    out = []
    for i, part in enumerate(words):
        others = {t for j, ws in enumerate(words) if j != i for w in ws for t in bm25_terms.terms(w)}
        own = [w for w in part if not set(bm25_terms.terms(w)) <= others]
        if not 1 <= len(own) <= 2:
            return []
        out.append(" ".join(own))
    return out


def question_subjects(question: str, passages: Sequence[str] = ()) -> Subjects:
    """The subjects a question asks about, found without a model: names joined by "and"/"or" ("Where
    were Gustav Klimt and Piet Mondrian born?"), else the first name of each part of a two-part
    question ("When did Ghana ..., and since when has Egypt ...?") unless one name is in every part
    (one subject asked two things) or a part says "he"/"that city" (the same one again), or the words
    only one of two parallel parts has ("a male otter", "a male swan"); else two lower-case subjects
    around "and". Empty for a question about one thing, and for two names joined by "and" that the
    `passages` (the documents' text found for it) say as one name (one_name)."""
    tokens = _WORD.findall(question)
    found, comparison = _coordinated(tokens)
    if len(found) == 2 and len(found[0].split()) == 1 < len(found[1].split()) and not comparison:
        return Subjects()  # "Pierre and Marie Curie", "Orville and Wilbur Wright": one family name
    if len(found) == 2 and not comparison and one_name(found[0], found[1], passages):
        return Subjects()  # "the College of William and Mary", "Trinidad and Tobago"
    if found:
        return Subjects(tuple(_merged(found)), comparison)
    clauses = [c for c in _CLAUSE.split(question) if c.strip()]
    if len(clauses) >= 2:
        runs = [_runs(_WORD.findall(c)) for c in clauses]
        if not any(runs):
            said = {w.lower() for w in _WORD.findall(question)} & _PRONOUNS
            parallel = [] if said else _parallel(clauses)
            return Subjects(tuple(parallel), parts=tuple(clauses)) if len(parallel) >= 2 else Subjects()
        heads = [{name_terms(r.text)[-1] for r in rs if name_terms(r.text)} for rs in runs]
        if set.intersection(*heads):
            return Subjects()  # one subject in every part
        chosen: dict[str, str] = {}  # name -> its part
        for clause, rs in zip(clauses, runs, strict=True):
            if {w.lower() for w in _WORD.findall(clause)} & _PRONOUNS:
                continue
            fresh = [r.text for r in rs if name_terms(r.text) and not any(names(r.text, c) for c in chosen)]
            if fresh:
                chosen[fresh[0]] = clause.strip()
        merged = _merged(list(chosen))
        parts = tuple(chosen[n] for n in merged)
        return Subjects(tuple(merged), parts=parts) if len(merged) >= 2 else Subjects()
    if not _runs(tokens):
        pair, comparison = _lower_coordinated(tokens)
        if pair:
            return Subjects(tuple(pair), comparison)
    return Subjects()


ONE_NAME_TIMES = 2
"""How often the passages must say two names joined by "and" as one ("William and Mary") for them to be one."""


def one_name(left: str, right: str, passages: Sequence[str]) -> bool:
    """Whether the documents use "`left` and `right`" as one name, not two subjects: the words that
    meet at the "and" ("William" of "College of William", "Mary") are written so, joined by "and" or
    "&" with the case the question gives them, at least ONE_NAME_TIMES times ("the College
    of William and Mary", "Trinidad and Tobago", "Lewis and Clark"). Two people asked about side by
    side ("Gustav Klimt and Piet Mondrian") are rarely written "Klimt and Piet" even once."""
    said = re.compile(rf"\b{re.escape(left.split()[-1])}\s+(?:and|&)\s+{re.escape(right.split()[0])}\b")
    return sum(len(said.findall(text)) for text in passages) >= ONE_NAME_TIMES


def question_parts(question: str) -> list[str]:
    """The questions a two-part question about one subject asks ("Who assassinated Abraham Lincoln?",
    "In which county was Lincoln born?"), each whole: a part that says "he", "she" or "they" gets the
    question's first name instead ("In what year did Alessandro Volta become professor..."). [] for a
    question of one part."""
    clauses = [c.strip(" ,;?") for c in _CLAUSE.split(question) if c.strip(" ,;?")]
    if len(clauses) < 2 or any(len(_WORD.findall(c)) < 3 for c in clauses):
        return []
    named = name_runs(clauses[0])
    out = []
    for clause in clauses:
        if named:
            clause = re.sub(r"\b(?:he|she|they)\b", named[0], clause, count=1, flags=re.IGNORECASE)
        out.append(f"{clause[:1].upper()}{clause[1:]}?")
    return out


def subject_question(question: str, subjects: Subjects, name: str) -> str:
    """The question about `name` alone: its part of a two-part question ("When did Ghana gain
    independence?"), else the question with `name` for the names joined ("In what years did James
    Watt die?"), else the question and which subject to answer for."""
    part = subjects.part(name)
    if part:
        return part.strip().rstrip(" ,;?") + "?"
    joiner = r"(?:\s*,\s*(?:and\s+|or\s+)?|\s+and\s+|\s+or\s+)"
    together = re.compile(joiner.join(re.escape(n) for n in subjects.names), re.IGNORECASE)
    if together.search(question):
        return together.sub(lambda _: name, question, count=1)
    return f"{question} (Answer for {name} only.)"


def questions_apart(question: str, subjects: Subjects) -> list[tuple[str, str | None]]:
    """The questions to ask one at a time instead of `question`, each with the subject it is about
    (None: a part about the question's one subject); [] to ask it whole. Apart: each of two subjects
    ("Where were Gustav Klimt born?"), else each part of a two-part question (question_parts). Whole:
    a comparison ("Which is older, X or Y?") or a yes/no question, which want both at once, and a
    relation ("the similarities between beetles and grasshoppers"), which no one subject answers."""
    if subjects.comparison or YES_NO.match(question.strip()) or _RELATION.search(question):
        return []
    if len(subjects.names) >= 2:
        return [(subject_question(question, subjects, name), name) for name in subjects.names]
    if not subjects.names:
        return [(part, None) for part in question_parts(question)]
    return []


# A noun that names a person: "which physicist", "that man" ask for someone "he" or "his" can stand for.
_PERSON_NOUNS = _words(
    "person people man woman men women boy girl king queen emperor empress prince princess pharaoh "
    "president chancellor minister governor senator general admiral leader ruler monarch pope saint "
    "author writer poet novelist painter composer singer actor actress player explorer inventor founder "
    "father mother son daughter brother sister wife husband child"
)
_PERSON_SUFFIX = re.compile(r"(?:ist|ian|ologist|eer|wright)s?$")
# The first part asks for a thing: "which city", "what physicist", "who" (a person), "whom".
_ASKS_ENTITY = re.compile(r"\b(?:which|what)\s+([a-z]+)\b|\b(who|whom)\b", re.IGNORECASE)
_BE = _words("is was are were")
# What the second part calls the first part's answer: "that city", "this scientist's", "he", "its".
_DEMONSTRATIVE = re.compile(r"\b(?:that|this|the same)\s+([a-z]+)(['’]s)?\b", re.IGNORECASE)
_PERSONAL = re.compile(r"\b(he|she|him|his|her)\b", re.IGNORECASE)
_IMPERSONAL = re.compile(r"\b(its|it)\b", re.IGNORECASE)


def _is_person(noun: str) -> bool:
    return noun in _PERSON_NOUNS or noun.rstrip("s") in _PERSON_NOUNS or bool(_PERSON_SUFFIX.search(noun))


@dataclass(frozen=True)
class Bridge:
    """A two-part question whose second part asks about the first part's answer: "Standard spoken
    Chinese is based on the dialect of which city, and in what year did that city host the Olympic
    Games?" `first` is asked first ("... of which city?"); `then(entity)` is the second part about
    the entity its answer names ("In what year did Beijing host the Olympic Games?")."""

    first: str
    second: str
    reference: str  # the words of `second` that stand for the answer: "that city", "he", "his"

    def entity(self, answer: str) -> str | None:
        """The name the first part's answer gives: its first capitalised name that the first part
        does not already say ("Isaac Newton" in "Faraday's plaque is near Isaac Newton's tomb")."""
        asked = set(bm25_terms.terms(self.first))
        for run in _runs(_WORD.findall(re.sub(r"\[\d+\]", " ", answer))):
            words = name_terms(run.text)
            if words and not set(words) <= asked:
                said = run.text.split()  # a name said twice over ("Henri Becquerel Antoine Henri
                # Becquerel"): up to its last word's first time
                return " ".join(said[: said.index(said[-1]) + 1])
        return None

    def then(self, entity: str) -> str:
        """The second part with `entity` for its reference (a possessive kept: "that scientist's"
        and "his" become "Isaac Newton's")."""
        words = self.reference.split()
        possessive = (
            self.reference.endswith(("'s", "’s"))
            or words[-1].lower() in ("his", "its")
            or (words[-1].lower() == "her" and _possessive_her(self.second, self.reference))
        )
        said = f"{entity}'s" if possessive else entity
        return re.sub(rf"\b{re.escape(self.reference)}(?!\w)", lambda _: said, self.second, count=1)


def _possessive_her(text: str, reference: str) -> bool:
    """Whether "her" in `text` is followed by the thing she has ("her husband"), not a preposition."""
    after = re.search(rf"\b{re.escape(reference)}\s+(\w+)", text)
    return after is not None and after.group(1).lower() not in bm25_terms.STOPWORDS


def bridge(question: str) -> Bridge | None:
    """The question as a bridge (Bridge), or None. Its first part must ask for a thing ("which city",
    "which physicist", "who") and its second part call that thing "that city", "this scientist's",
    or, for a person, "he"/"his"/"she"/"her"/"him", for a thing "it"/"its". A first part that
    asks what something is ("Who was Lincoln?") or names its own subject for the pronoun ("What
    device did Volta improve, and when did he ...": "he" is Volta, a person; a device is not) is no
    bridge: question_parts asks such parts with the name."""
    clauses = [c.strip(" ,;?") for c in _CLAUSE.split(question) if c.strip(" ,;?")]
    if len(clauses) != 2 or any(len(_WORD.findall(c)) < 3 for c in clauses):
        return None
    first, second = clauses
    asked = _ASKS_ENTITY.search(first)
    if asked is None:
        return None
    noun = (asked.group(1) or "").lower()
    if noun in _BE and (named := re.match(r"\s+the\s+([a-z]+)\s+of\b", first[asked.end() :], re.IGNORECASE)):
        noun = named.group(1).lower()  # "What is the capital of Finland": a capital
    if noun in _BE or noun in bm25_terms.STOPWORDS or noun in _AUX:
        return None  # "what is ...", "what does ...": not a thing of a kind
    # the kind asked for and the words after it, an adjective's noun among them ("which French physicist")
    kinds = [noun, *(w.lower() for w in _WORD.findall(first[asked.end() :])[:2])]
    if asked.group(2):  # who / whom
        after = _WORD.findall(first[asked.end() :])
        if after[:1] and after[0].lower() in _BE and after[1:2] and after[1][:1].isupper():
            return None  # "Who was Abraham Lincoln?" asks about the one it names ("Who was the ..." does not)
        kinds = ["person"]
    person = any(_is_person(k) for k in kinds)
    shown = _DEMONSTRATIVE.search(second)
    kind = shown.group(1).lower() if shown else ""
    if not (shown and (kind in kinds or kind.rstrip("s") in kinds or (person and _is_person(kind)))):
        shown = (_PERSONAL if person else _IMPERSONAL).search(second)
    if shown is None:
        return None
    reference = shown.group(0)
    return Bridge(f"{first[:1].upper()}{first[1:]}?", f"{second[:1].upper()}{second[1:]}?", reference)


def plan_subjects(text: str, question: str, limit: int = PLAN_SEARCHES) -> list[Subject]:
    """The searches to run beside the question's own: each subject of the question with the first
    planned search that names it (else its name), then the plan's other searches; when the question
    names no subjects and the plan is unusable, the question's names. At most `limit`."""
    planned = plan_queries(text, question, limit=limit + len(question.split()))
    asked = question_subjects(question)
    out: list[Subject] = []
    used: set[str] = set()
    for name in asked.names:
        query = next((q for q in planned if q not in used and names(q, name)), name)
        used.add(query)
        out.append(Subject(name, query, asked.part(name)))
    # a second search for a subject already searched adds nothing: only searches for other things
    out += [Subject(q, q) for q in planned if not any(names(q, s.name) for s in out)]
    if not out:
        out = [Subject(n, n) for n in name_runs(question)]
    return out[:limit]
