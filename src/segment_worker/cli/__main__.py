"""``python -m segment_worker.cli``: the same as the ``segment-worker`` command."""

from .main import main

main()
