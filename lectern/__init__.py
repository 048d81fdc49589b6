"""lectern: a private, local RAG workbench. The Python API lives here; see README.md."""
