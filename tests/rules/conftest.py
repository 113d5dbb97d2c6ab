"""Rule tests: validation, both evaluators (Python predicate and SQL) and their agreement."""
