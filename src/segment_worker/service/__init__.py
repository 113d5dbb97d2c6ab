"""Management operations (segments, members, imports, attributes, workspaces, audiences,
tokens) as a Python API used by the HTTP layer, the CLI and tests. Each membership change is
final (committed, in Redis, in the outbox) when its call returns."""
