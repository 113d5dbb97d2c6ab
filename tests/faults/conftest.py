"""The fault suite (issue 13): real worker processes crashed, frozen, starved of their servers and
fed poison, with expectations computed from the produced input alone (``faults/oracle.py``).

Every test here carries the ``faults`` marker, which the default run deselects (``addopts`` in
pyproject); ``scripts/test-faults`` runs them. ``SW_FAULTS_SCALE`` (default 1) multiplies every
scenario's size: the CI size at 1 is chosen to keep the whole suite near 10 minutes on 2 cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from faults.servers import OwnServers

_HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # tryfirst: the mark has to be there before ``-m`` deselects.
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="module")
def own_servers() -> Iterator[OwnServers]:
    """Servers of this module alone (the scenarios restart and empty them)."""
    servers = OwnServers().start()
    yield servers
    servers.stop()
