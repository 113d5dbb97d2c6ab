"""API tests: the app on the session's servers, an HTTP client and a workspace token
(``helpers.service_fixtures``)."""

from helpers.service_fixtures import *  # noqa: F403  (fixtures)
