"""`lectern serve`: an OpenAI-compatible API server for the local model and lectern's RAG chains.

    app.py            the FastAPI app: its routes
    server.py         what the routes share: the settings, the loaded model, its worker, the collections
    protocol.py       request bodies and response shapes (OpenAI's wire format, lectern's extras)
    edges.py          API keys and the body limit before any route; errors in OpenAI's shape
    jobs.py           a generation: its sampling, the events it sends, how it finished
    request_queue.py  the model worker: concurrent requests join the next generation batch
    static_batch.py   the local transformers model, a batch in one `generate` call
    one_at_a_time.py  any other model, one request at a time
    continuous.py     continuous batching on llama.cpp
    stop_strings.py   a reply cut at stop strings, a possible one held back
    queued_model.py   the worker as a chat model, for the chains
    tool_replies.py   tool calls read from a reply as it streams
    completions.py    chat and text completions of the local model
    rag_models.py     the RAG models (lectern-rag/<collection>, with sources) and /v1/summarize
    embeddings.py     /v1/embeddings over the ingestion embedder
    answers.py        the one loop from a generation's events to a response or an event stream

`run` is what the CLI calls: it refuses a non-loopback address without a key (lectern.exposure),
loads the model once and serves with uvicorn.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from lectern.errors import PortUnavailable
from lectern.exposure import API_SERVER, bare_host, check_exposure

if TYPE_CHECKING:
    from lectern.rag.settings import Settings
    from lectern.serve.server import ServeOptions

log = logging.getLogger("lectern.serve")


def listen(host: str, port: int) -> socket.socket:
    """The listening socket for `host`:`port`, bound now (before any model loads) so that a port in
    use or an address that is not this machine's is one clear PortUnavailable, not uvicorn's trace
    half a minute later. `serve` serves on it; `ui` closes it and lets Streamlit bind the same."""
    try:
        family, _, _, _, address = socket.getaddrinfo(
            bare_host(host), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        return socket.create_server(address, family=family, backlog=2048)
    except OSError as e:
        raise PortUnavailable(host, port, e.strerror or str(e)) from None


def run(
    settings: Settings,
    *,
    host: str,
    port: int,
    options: ServeOptions,
    insecure: bool = False,
    log_level: str = "info",
) -> None:
    """Bind the port, load the model, then serve until interrupted."""
    from lectern.rag.workspace import shared_llm
    from lectern.serve.app import build_app, uvicorn_server

    warning = check_exposure(host, API_SERVER, bool(options.api_keys), insecure)
    sock = listen(host, port)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if warning:
        log.warning(warning)
    if settings.llm.backend == "auto":  # said in the log (rag.llm.choose_backend)
        from lectern.rag.llm import resolve_auto

        chosen, why = resolve_auto(settings.llm)
        log.info("lectern serve: backend %s", why)
        settings = settings.model_copy(update={"llm": chosen})
    llm = shared_llm(settings)
    app = build_app(settings, llm, options)
    log.info("lectern serve: model %s on http://%s:%d/v1", app.state.server.model_id, host, port)
    uvicorn_server(app, host=bare_host(host), port=port, log_level=log_level).run(sockets=[sock])
