"""Service-layer tests: a ``ServiceContext`` on the session's servers (``helpers.service_fixtures``)."""

from helpers.service_fixtures import *  # noqa: F403  (fixtures)
