"""pytest plugin (registered as the `b24robots` pytest11 entry point): test robots the way we do.

Fixtures:

* ``b24_portal`` — a :class:`PortalSimulator` with one portal (``portal1.bitrix24.test``) and one
  registered (not yet installed) API-only app; use it in-process through ``b24_portal.app``.
* ``b24_portal_server`` — the same, served on ``127.0.0.1`` on a free port (``.base_url``).
* ``b24_router`` — the Router under test; override it in your ``conftest.py``::

      @pytest.fixture
      def b24_router():
          from myproject.robots import router
          return router

* ``b24_server`` (async, needs pytest-asyncio) — a b24robots server (SQLite in a temporary folder,
  workers, sender and the
  sandbox running) with the app installed on a simulated portal and every robot registered. Its
  ``run_robot(code, properties=...)`` starts the robot on a deal and returns the closed workflow
  after the server is idle; ``until_idle()``, ``sim``, ``portal`` and ``svc`` are there too::

      async def test_discount(b24_server):
          wf = await b24_server.run_robot("demo.discount", properties={"amount": 100})
          assert wf.return_values["total"] == 100.0

* ``b24_onec`` — a fake 1C:Enterprise infobase (standard OData interface) served on a free port:
  ``b24_onec.base_url`` is its OData root, ``b24_onec.fake`` its in-memory state (``add(...)``,
  ``fail_next(...)``, ``seen``); the infobase user is ``b24_onec.fake.username`` / ``.password``.

Works under pytest-asyncio's default *strict* mode with no configuration: ``b24_server`` is declared
with ``pytest_asyncio.fixture``, and an ``async def`` test that asks for it is marked ``asyncio`` by this
plugin (a test that already carries its own ``asyncio`` marker keeps it).

Helpers of the simulator: ``install_app``, ``issue_tokens``, ``start_robot``, ``call``,
``expire_tokens``, ``fill_bucket``, ``faults`` ...
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from b24robots.robots.router import Router

from .onec import FakeOneC, FakeOneCServer
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


@pytest.fixture
def b24_onec() -> Iterator[FakeOneCServer]:
    """A fake 1C infobase speaking OData on 127.0.0.1 (see b24robots.testing.onec)."""
    with FakeOneCServer(FakeOneC()) as server:
        yield server


@pytest.fixture
def b24_router() -> Router:
    """The robots under test; override this fixture to return your Router."""
    return Router()


ASYNC_FIXTURES = frozenset({"b24_server"})


async def _b24_server(b24_router: Router, tmp_path: Path) -> AsyncIterator[object]:
    """Our server wired to a simulated portal, app installed, robots registered, workers running."""
    from .app_fixtures import RobotHarness  # the full server stack loads only when this fixture is used

    async with RobotHarness(b24_router, data_dir=tmp_path / "b24robots") as harness:
        await harness.install()
        yield harness


try:
    import pytest_asyncio
except ImportError:  # the plugin loads in every pytest run of an environment that has b24robots
    HAVE_ASYNCIO = False
else:
    HAVE_ASYNCIO = True
    b24_server = pytest_asyncio.fixture(_b24_server, name="b24_server")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: Any, name: str, obj: object) -> None:
    """Mark `async def` tests that use our async fixtures as asyncio tests (pytest-asyncio strict mode)."""
    if not HAVE_ASYNCIO or not inspect.iscoroutinefunction(obj):
        return
    try:
        wanted = set(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return
    marks = getattr(obj, "pytestmark", [])
    if wanted & ASYNC_FIXTURES and not any(getattr(m, "name", "") == "asyncio" for m in marks):
        pytest.mark.asyncio(obj)
