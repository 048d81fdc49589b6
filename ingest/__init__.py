"""Documents to a durable, incremental FAISS index: load, chunk, embed, store."""
