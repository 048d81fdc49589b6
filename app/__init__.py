"""The Streamlit web UI: thin, it calls rag/ and ingest/ and renders."""
