"""The GraphQL and REST API (FastAPI + strawberry); torch-free, talks to stores and the queue."""

from .app import create_app

__all__ = ["create_app"]
