"""A bounded property-based fuzz of `lectern serve` (fake model, real loopback server): valid bodies
with any field replaced by any JSON (strings with lone surrogates, deep lists, huge numbers), and
bytes that are not JSON at all, on every POST route. Whatever comes, the answer is never a 5xx, and a
stream never carries a server error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lectern.rag.fake import FakeChatModel
from tests.serve.conftest import serving

MESSAGES = [{"role": "user", "content": "Hello there"}]
VALID: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "fake", "messages": MESSAGES},
    "/v1/completions": {"model": "fake", "prompt": "Once upon a time"},
    "/v1/embeddings": {"model": "lectern-embed", "input": ["a lighthouse"]},
    "/v1/summarize": {"collection": "test", "query": "locks"},
}
FIELDS = {
    "/v1/chat/completions": ["model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
                             "n", "stop", "seed", "stream", "stream_options", "tools", "tool_choice", "k",
                             "mode", "sources", "logprobs", "ignore_eos"],
    "/v1/completions": ["model", "prompt", "max_tokens", "seed", "stop", "stream", "echo", "temperature"],
    "/v1/embeddings": ["model", "input", "encoding_format", "dimensions"],
    "/v1/summarize": ["collection", "source", "query", "method", "max_tokens"],
}  # fmt: skip
EXAMPLES = 40  # per route: the whole fuzz runs in seconds

surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])
text = st.text(alphabet=st.characters() | surrogates, max_size=20)  # lone surrogates too
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


def bodies(path: str) -> st.SearchStrategy[bytes]:
    """A valid body with some fields replaced (or added) by arbitrary JSON, a rag model now and then,
    or bytes that are not JSON."""
    mutated = st.builds(
        lambda base, changes, rag: {
            **base,
            **changes,
            **({"model": "lectern-rag/test"} if rag and path == "/v1/chat/completions" else {}),
        },
        st.just(VALID[path]),
        st.dictionaries(st.sampled_from(FIELDS[path]) | text, json_values, max_size=3),
        st.booleans(),
    )
    return mutated.map(lambda body: json.dumps(body).encode()) | st.binary(max_size=64)


@pytest.fixture(scope="module")
def fuzz_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from lectern.rag.settings import load_settings
    from lectern.rag.workspace import Workspace
    from tests.conftest import SAMPLE_DOCS

    data = tmp_path_factory.mktemp("fuzz-data")
    fast = {"embed": {"model": "fake"}, "parse_workers": 0, "lock_timeout_s": 2.0}
    config = load_settings(data_dir=data, ingest=fast)
    ws = Workspace(collection="test", settings=config)
    ws.ingest([SAMPLE_DOCS / "brennock_canal.txt"])
    ws.close()
    with serving(config, FakeChatModel(), max_batch=4, max_queue=64) as url:
        yield url


@pytest.mark.parametrize("path", list(VALID))
def test_no_body_makes_the_server_fail(fuzz_url: str, path: str) -> None:
    with httpx.Client(base_url=fuzz_url, timeout=30) as client:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )  # fmt: skip  (same examples every run, no files)
        @given(raw=bodies(path))
        def never_5xx(raw: bytes) -> None:
            r = client.post(path, content=raw, headers={"Content-Type": "application/json"})
            assert r.status_code < 500, (raw[:300], r.text[:500])
            assert "server_error" not in r.text, (raw[:300], r.text[:500])  # a stream's error frame

        never_5xx()
    assert httpx.get(f"{fuzz_url}/health").json()["requests"]["failed"] == 0
