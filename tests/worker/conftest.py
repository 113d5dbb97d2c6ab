"""Worker runtime tests: real broker, PostgreSQL and Redis; the store fixtures for the record cache."""

from helpers.store_fixtures import *  # noqa: F403  (fixtures)
