"""The ``segment-worker`` command line: ``main`` (click group and the service commands) and ``ops``
(``dev``, ``reconcile``). Heavy modules are imported inside the commands."""

from .main import main

__all__ = ["main"]
