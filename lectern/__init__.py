"""lectern: a private, local RAG workbench. The Python API; see README.md.

import lectern
ws = lectern.Workspace(collection="docs")
ws.ingest(["./my-docs"])
print(ws.ask("What does the guide say about sync?").answer)
"""

from rag.settings import Settings, load_settings
from rag.workspace import Workspace

__all__ = ["Settings", "Workspace", "load_settings"]
