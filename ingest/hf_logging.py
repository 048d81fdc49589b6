"""Hugging Face libraries kept quiet: no load reports and no progress bars on stderr.

transformers prints a "Loading weights" bar and load reports each time a model loads; in a log or a
pipe those are pages of carriage returns. Every place that loads a transformers or
sentence-transformers model calls `quiet()` first.
"""

from __future__ import annotations


def quiet() -> None:
    """transformers at error level and its progress bars off (idempotent, imports transformers)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
