"""A protocol-faithful Bitrix24 portal simulator for tests (robots, activities, OAuth, limits).

::

    sim = PortalSimulator()
    portal = sim.add_portal()
    app = sim.register_app("My app", install_url="https://app.example.test/install")
    await sim.install_app(app, portal)          # POSTs ONAPPINSTALL to the app
    wf = await sim.start_robot(portal, "send_sms", properties={"phone": "+49 30 1234567"})
    await wf.closed(timeout=5)

See ``docs/simulator.md``.
"""

from .clock import Clock, ManualClock, SystemClock
from .faults import FaultRule, Faults
from .model import (
    CallRecord,
    Delivery,
    Installation,
    LogEntry,
    Portal,
    Registration,
    SimApp,
    User,
    Webhook,
    Workflow,
)
from .onec import FakeOneC, FakeOneCServer, LocalServer
from .server import SimulatorServer
from .signing import sign_event_token, unsign_event_token
from .simulator import PortalSimulator, TokenPair

__all__ = [
    "CallRecord",
    "Clock",
    "Delivery",
    "FakeOneC",
    "FakeOneCServer",
    "FaultRule",
    "Faults",
    "Installation",
    "LocalServer",
    "LogEntry",
    "ManualClock",
    "Portal",
    "PortalSimulator",
    "Registration",
    "SimApp",
    "SimulatorServer",
    "SystemClock",
    "TokenPair",
    "User",
    "Webhook",
    "Workflow",
    "sign_event_token",
    "unsign_event_token",
]
