"""Command-line tests: the click commands, in-process and as real processes."""
