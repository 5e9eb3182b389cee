"""The ASGI entry point for uvicorn and containers: `uvicorn studioops.api.main:app`."""

from studioops.api.app import create_app

app = create_app()
