"""The HTTP API (CONTRACT §8): ``create_app(settings)``."""

from .app import create_app

__all__ = ["create_app"]
