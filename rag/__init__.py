"""The local LLM, retrieval and the chains: cited answers, chat and summaries."""
