"""The HTTP API (FastAPI on uvicorn): health, readiness, metrics; later issues add their routes here."""

from studioops.api.app import create_app

__all__ = ["create_app"]
