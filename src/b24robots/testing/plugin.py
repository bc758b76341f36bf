"""pytest plugin: a portal simulator per test.

Fixtures:

* ``b24_portal`` — a :class:`PortalSimulator` with one portal (``portal1.bitrix24.test``) and one
  registered (not yet installed) API-only app; use it in-process through ``b24_portal.app``.
* ``b24_portal_server`` — the same, served on ``127.0.0.1`` on a free port (``.base_url``).

Helpers are methods of the simulator: ``install_app``, ``issue_tokens``, ``start_robot``,
``call``, ``expire_tokens``, ``fill_bucket``, ``faults`` ...
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import SimulatorServer
from .simulator import PortalSimulator


def make_simulator(**options: object) -> PortalSimulator:
    """A simulator with one portal and one registered API-only app."""
    sim = PortalSimulator(**options)  # type: ignore[arg-type]
    sim.add_portal()
    sim.register_app("Test application", api_only=True)
    return sim


@pytest.fixture
def b24_portal() -> PortalSimulator:
    return make_simulator()


@pytest.fixture
def b24_portal_server() -> Iterator[SimulatorServer]:
    with SimulatorServer(make_simulator()) as server:
        yield server
