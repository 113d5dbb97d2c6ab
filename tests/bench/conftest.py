"""The benchmark's smoke test (a short real run)."""
