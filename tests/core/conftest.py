"""Pure-core tests (events, apply, engine, partitioning, CSV parsing, schemas): no servers."""
