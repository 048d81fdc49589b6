"""lectern: a private, local RAG workbench. The Python API; see README.md.

import lectern
ws = lectern.Workspace(collection="docs")
ws.ingest(["./my-docs"])
print(ws.ask("What does the guide say about sync?").answer)

Installed, everything lives under this one package: lectern.ingest (load, chunk, embed, store),
lectern.rag (models and chains), lectern.app (the web UI), lectern.cli and lectern.errors. The names
below load on first use, so `import lectern.errors` (or the CLI's --help) does not pull in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lectern.rag.settings import Settings, load_settings
    from lectern.rag.workspace import Workspace

__all__ = ["Settings", "Workspace", "load_settings"]


def __getattr__(name: str) -> Any:
    if name == "Workspace":
        from lectern.rag.workspace import Workspace

        return Workspace
    if name in ("Settings", "load_settings"):
        from lectern.rag import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'lectern' has no attribute {name!r}")
