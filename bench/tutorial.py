"""The pipeline every LangChain tutorial teaches, as the baseline for lectern's benchmarks.

PyPDFLoader / TextLoader -> RecursiveCharacterTextSplitter(1000, 200) ->
HuggingFaceEmbeddings(all-MiniLM-L6-v2) -> FAISS.from_documents, then dense similarity search.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lectern.ingest.embed_base import packaged_minilm_path


def load(paths: Sequence[Path]) -> list[Any]:
    from langchain_community.document_loaders import PyPDFLoader, TextLoader

    docs = []
    for p in paths:
        if p.suffix.lower() == ".pdf":
            docs.extend(PyPDFLoader(str(p)).load())
            continue
        try:  # TextLoader's autodetect needs chardet, whose current release it cannot read
            docs.extend(TextLoader(str(p), encoding="utf-8").load())
        except RuntimeError:
            docs.extend(TextLoader(str(p), encoding="latin-1").load())
    return docs


def build(paths: Sequence[Path]) -> tuple[Any, int]:
    """Returns the FAISS vector store and the number of chunks."""
    from langchain_community.vectorstores import FAISS
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    docs = load(paths)
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
    chunks = splitter.split_documents(docs)
    embeddings = HuggingFaceEmbeddings(model_name=str(packaged_minilm_path()))
    store = FAISS.from_documents(chunks, embeddings)
    return store, len(chunks)
