"""The worker runtime (``segment-worker run``): everything that turns the input topic into
committed memberships, Redis sets and output events.

Where to look:

- ``loop``: ``Worker`` — lifecycle and the batch loop (fetch → batch → outbox → Kafka commit);
- ``partitions``: ``PartitionState`` — owned partitions, epochs, readiness, moves, offsets to commit;
- ``ownership``: the rebalance callbacks, claiming and positioning partitions;
- ``batch``: one batch of records through the unit of work (commit order: ``stores.unit``);
- ``fetching``: ``getmany`` ahead of the batch, parsing, stale-record filtering;
- ``ticker``: time-relative re-checks; ``outbox``: sending transitions in commit order;
- ``deadletter``, ``positions``, ``record_cache``, ``catalog_cache``, ``metrics``, ``clock``,
  ``gcpacing``; ``lanes``: several workers in one process.
"""

from .lanes import run_until_signalled
from .loop import Worker, WorkerOptions

__all__ = ["Worker", "WorkerOptions", "run_until_signalled"]
