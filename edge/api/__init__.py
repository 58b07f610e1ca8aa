"""The local HTTP API (FastAPI)."""
