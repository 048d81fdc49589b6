"""The flags several commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Where collections live (LECTERN_DATA_DIR).")
]
CollectionOpt = Annotated[str | None, typer.Option("--collection", "-c", help="Collection name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ModeOpt = Annotated[str | None, typer.Option("--mode", "-m", help="hybrid | dense | bm25")]
KOpt = Annotated[int | None, typer.Option("-k", "--k", help="How many chunks to retrieve.")]
BackendOpt = Annotated[
    str | None, typer.Option("--backend", help="LLM backend: auto | llamacpp | local | openai | fake")
]
PromptOpt = Annotated[
    str | None, typer.Option("--prompt", help="QA prompt: zero_shot | few_shot | chain_of_thought")
]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="packaged:NAME, a model folder, a hub id or a .gguf")
]
AdapterOpt = Annotated[
    str | None,
    typer.Option("--adapter", help="A PEFT LoRA adapter folder for the local model (lectern tune)."),
]
