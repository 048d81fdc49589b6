"""`lectern serve`: the OpenAI-compatible API server."""

from __future__ import annotations

from typing import Annotated

import typer

from lectern.cli.edge import edge, llm_flags, settings_from_flags
from lectern.cli.options import AdapterOpt, BackendOpt, DataDir, ModelOpt


def serve(
    host: Annotated[str, typer.Option(help="Address to bind; not loopback needs --api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.", min=1, max=65535)] = 8000,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key", envvar="LECTERN_SERVE_API_KEY", help="A key clients must send (repeatable)."
        ),
    ] = None,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Default collection of /v1/summarize.")
    ] = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    max_batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Most requests generated at once (default: 32 on llama.cpp, 8 on transformers; "
            "1: one at a time).",
        ),
    ] = None,
    max_queue: Annotated[int, typer.Option(help="Waiting requests past which the server answers 503.")] = 32,
    insecure_no_api_key: Annotated[
        bool, typer.Option("--insecure-no-api-key", help="Serve a non-loopback address without a key.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
    data_dir: DataDir = None,
) -> None:
    """Serve the model and the collections over an OpenAI-compatible API (/v1/chat/completions...)."""
    from lectern.exposure import API_SERVER, check_exposure
    from lectern.serve import run
    from lectern.serve.server import ServeOptions

    with edge():
        options = ServeOptions(
            api_keys=tuple(api_key or ()), collection=collection, max_batch=max_batch, max_queue=max_queue
        )  # fmt: skip  (an empty key: refused here)
        check_exposure(host, API_SERVER, bool(options.api_keys), insecure_no_api_key)  # before a model loads
        settings = settings_from_flags(data_dir, llm=llm_flags(backend, model, adapter))
        run(
            settings, host=host, port=port, options=options, insecure=insecure_no_api_key, log_level=log_level
        )
