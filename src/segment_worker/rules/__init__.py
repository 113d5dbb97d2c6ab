"""Rules of dynamic segments: AST, validation, and the two compilers (Python predicate and SQL)."""
