"""How close an answer is to a gold answer: strict containment, SQuAD token F1, a lenient match
that reads the same date or number written differently as equal, and the share of a gold sentence's
content words an answer holds.

    contains_gold("He retired in 1819 [2].", ["1819"])                  -> True
    token_f1("piccolo trumpets", ["the piccolo trumpet"])              -> 0.5
    lenient_contains("It opened on October 14, 1852.", ["14 October 1852"])  -> True
    answer_recall("His father was a shipwright, ship owner and builder.",
                  ["a shipwright, ship owner and contractor"])          -> 0.75

Every form folds accents and Unicode compatibility forms first ("Montréal" = "Montreal", "ﬁ" = "fi").

Gold answers are compared after `canonical` (lower case, punctuation and articles dropped, dates as
YYYY-MM-DD, number words and "1,000" as digits), so "three" = "3" and "Oct. 14, 1852" = "14/10/1852"
is not guessed: only unambiguous written forms are read as dates.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

from lectern.ingest import bm25_terms

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation) | {"\u2018", "\u2019", "\u201c", "\u201d", "\u2013", "\u2014"}
_NON_ALNUM = re.compile(r"[^0-9a-z]+")

MONTHS = {
    name: i
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
_UNITS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]  # fmt: skip
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)} | {w: 10 * i for i, w in enumerate(_TENS) if w}
SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000}
ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12,
}  # fmt: skip

_MONTH = r"(?P<month>" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>\d{3,4})"
_DATE_FORMS = [
    re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b"),  # 14 October 1852
    re.compile(rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR}\b"),  # October 14, 1852
    re.compile(r"\b(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})\b"),  # 1852-10-14
    re.compile(rf"\b{_MONTH},?\s+{_YEAR}\b"),  # October 1852
    re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH}\b"),  # 14 October
    re.compile(rf"\b{_MONTH}\s+{_DAY}\b(?!\s*,?\s*\d)"),  # October 14
]
_THOUSANDS = re.compile(r"\b(\d{1,3}(?:,\d{3})+)\b")
_NUMBER_WORD_RUN = re.compile(
    r"\b(?:(?:" + "|".join([*NUMBER_WORDS, *SCALES, "and"]) + r")(?:[\s-]+|\b))+",
)


RECALL_MATCH = 0.8  # an answer holding this share of a gold's content words counts as a match


def fold_accents(text: str) -> str:
    """Compatibility forms unfolded (NFKD) and combining marks dropped: "Montréal" -> "Montreal"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def squad_normalise(text: str) -> str:
    """SQuAD's answer normalisation: lower case, punctuation and articles removed, spaces collapsed
    (accents folded first)."""
    text = "".join(" " if ch in _PUNCT else ch for ch in fold_accents(text).lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalise(text: str) -> str:
    """Lower case, accents folded, non-alphanumerics to spaces, spaces collapsed (the strict form)."""
    return " ".join(_NON_ALNUM.sub(" ", fold_accents(text).lower()).split())


def contains_gold(answer: str, gold: Sequence[str]) -> bool:
    """A normalised gold answer appears in the normalised answer, on word boundaries."""
    text = f" {normalise(answer)} "
    return any(g and f" {normalise(g)} " in text for g in gold)


def token_f1(prediction: str, gold: Sequence[str]) -> float:
    """SQuAD token F1 of the prediction against the best gold answer (0.0 with no gold)."""
    pred = squad_normalise(prediction).split()
    best = 0.0
    for answer in gold:
        ref = squad_normalise(answer).split()
        common = Counter(pred) & Counter(ref)
        same = sum(common.values())
        if not pred or not ref or same == 0:
            continue
        precision, recall = same / len(pred), same / len(ref)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def _date_token(match: re.Match[str]) -> str:
    parts = match.groupdict()
    month = parts.get("month")
    month_no = int(month) if month and month.isdigit() else MONTHS.get((month or "").lower().rstrip("."), 0)
    day = int(parts["day"]) if parts.get("day") else 0
    if not 1 <= month_no <= 12 or day > 31:
        return match.group(0)
    year = parts.get("year")
    if year and day:
        return f" d{int(year):04d}x{month_no:02d}x{day:02d} "
    if year:
        return f" d{int(year):04d}x{month_no:02d} "
    return f" dxx{month_no:02d}x{day:02d} "


def _words_to_number(words: list[str]) -> int | None:
    total = current = 0
    seen = False
    for word in words:
        if word == "and":
            continue
        if word in NUMBER_WORDS:
            current += NUMBER_WORDS[word]
        elif word in SCALES:
            current = max(current, 1) * SCALES[word]
            if SCALES[word] >= 1000:
                total, current = total + current, 0
        else:
            return None
        seen = True
    return total + current if seen else None


def _number_run(match: re.Match[str]) -> str:
    words = [w for w in re.split(r"[\s-]+", match.group(0).strip()) if w]
    while words and words[-1] == "and":  # "three and" -> keep the "and" as a word
        words.pop()
    value = _words_to_number(words)
    if value is None:
        return match.group(0)
    tail = match.group(0)[len(match.group(0).rstrip()) :]
    return f" {value} " + tail


def canonical(text: str) -> str:
    """The lenient form: dates as one token (d1852x10x14), number words and "1,000" as digits,
    ordinals as digits, then SQuAD normalisation."""
    text = fold_accents(text).lower().replace("\u2013", "-").replace("\u2014", "-")
    text = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), text)
    for form in _DATE_FORMS:
        text = form.sub(_date_token, text)
    text = re.sub(r"\b(\d+)(?:st|nd|rd|th)\b", r"\1", text)
    text = re.sub(r"\b(" + "|".join(ORDINALS) + r")\b", lambda m: str(ORDINALS[m.group(1)]), text)
    text = _NUMBER_WORD_RUN.sub(_number_run, text)
    return squad_normalise(text)


def lenient_contains(answer: str, gold: Sequence[str]) -> bool:
    """contains_gold on the canonical forms: the same date or number written differently matches."""
    if contains_gold(answer, gold):
        return True
    text = f" {canonical(answer)} "
    return any((g := canonical(a)) and f" {g} " in text for a in gold)


def answer_recall(answer: str, gold: Sequence[str]) -> float:
    """The largest share, over the gold answers, of a gold's content words (stemmed, stop words
    dropped, dates and numbers in one form) that the answer holds: a sentence-long gold is matched
    by an answer that says it with a word left out or changed. 0.0 with no gold."""
    said = set(bm25_terms.terms(canonical(answer)))
    best = 0.0
    for answer_gold in gold:
        wanted = set(bm25_terms.terms(canonical(answer_gold))) or set(canonical(answer_gold).split())
        if wanted:
            best = max(best, len(wanted & said) / len(wanted))
    return best


def context_has_answer(passages: Sequence[str], gold: Sequence[str]) -> bool:
    """A gold answer appears (strictly) in one of the passages given to the model."""
    return any(contains_gold(p, gold) for p in passages)
