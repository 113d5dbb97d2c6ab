"""`segment-worker dev` tests: the whole embedded stack as a user starts it."""
