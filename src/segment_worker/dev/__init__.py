"""``segment-worker dev``: embedded servers, worker, API and a demo workspace in one command."""

from .processes import DevError
from .session import DevOptions, run_dev

__all__ = ["DevError", "DevOptions", "run_dev"]
