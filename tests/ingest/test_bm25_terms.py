"""The one tokenizer: what BM25 indexes and what rag compares (evidence, citations) are the same words."""

from __future__ import annotations

from lectern.ingest.bm25_terms import STOPWORDS, fold, terms


def test_terms_are_lower_cased_stemmed_words_without_stop_words() -> None:
    assert terms("Who serviced the Pumps, and when?") == ["servic", "pump"]
    assert terms("running_documents 42") == ["run", "document", "42"]  # "_" splits, digits stay


def test_question_words_are_stop_words_and_very_long_tokens_are_dropped() -> None:
    assert {"who", "when", "which", "what"} <= STOPWORDS
    assert terms("x" * 40 + " pump") == ["pump"]


def test_fold_matches_phrases_whatever_the_case_apostrophe_and_spacing() -> None:
    assert fold("  I Don\u2019t\n know. ") == "i don't know."
