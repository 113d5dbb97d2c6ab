"""Store tests: a pool, a connection and a Redis client on the session's servers
(``helpers.store_fixtures``); reconcile also drives the service layer (``helpers.service_fixtures``)."""

from helpers.service_fixtures import *  # noqa: F403  (fixtures)
from helpers.store_fixtures import *  # noqa: F403  (fixtures)
