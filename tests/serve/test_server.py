"""What the routes share, without a server: the worker make_batcher picks for a model."""

from __future__ import annotations

from lectern.rag.fake import FakeChatModel
from lectern.serve.request_queue import Batcher
from lectern.serve.server import STATIC_BATCH, make_batcher


def test_max_batch_left_out_is_the_backends_own() -> None:
    """Continuous rows on llama.cpp (tests/integration/test_serve_structured_e2e.py reads them off a
    real server), static batches of STATIC_BATCH otherwise; 1 is one at a time on both."""
    for asked, served in ((None, STATIC_BATCH), (1, 1), (3, 3)):
        batcher = make_batcher(FakeChatModel(), max_batch=asked)
        try:
            assert type(batcher) is Batcher and batcher.max_batch == served
        finally:
            batcher.close()
