"""``b24robots portal``: run the Bitrix24 portal simulator as a standalone server."""

from __future__ import annotations

import asyncio
import socket

from b24robots.cli.common import fail
from b24robots.testing import PortalSimulator, SimulatorServer


def _check_port(host: str, port: int) -> None:
    """One line naming the fix when the address is taken, before the server's own error and traceback."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is fine
        try:
            probe.bind((host, port))
        except OSError as exc:
            fail(f"cannot listen on {host}:{port} ({exc.strerror}); stop what uses it or pick another --port")


def run_portal(
    host: str,
    port: int,
    rate: float,
    burst: int,
    client_id: str | None,
    client_secret: str | None = None,
    install_url: str | None = None,
    portals: int = 1,
    api_only: bool = True,
    scopes: str = "crm,bizproc,user_brief,placement",
) -> None:
    """Serve a simulator with ``portals`` portals until interrupted (Ctrl+C).

    With ``client_id`` an app with that id (and ``client_secret``, generated when omitted) is
    registered; with ``install_url`` as well it is installed on every portal once listening.
    """
    _check_port(host, port)
    sim = PortalSimulator(rate=rate, burst=burst)
    for _ in range(max(1, portals)):
        sim.add_portal()
    app = None
    if client_id:
        app = sim.register_app(
            "Local application",
            client_id=client_id,
            client_secret=client_secret,
            install_url=install_url,
            api_only=api_only,
            scopes=[s.strip() for s in scopes.split(",") if s.strip()],
        )
    server = SimulatorServer(sim, host=host, port=port)
    server.start()
    base = server.base_url
    print(f"Bitrix24 portal simulator listening on {base}", flush=True)
    print(f"  REST endpoint:   {base}/rest/<method>  (client_endpoint; server_endpoint: {sim.server_endpoint})")
    print(f"  OAuth server:    {sim.oauth_url}  (set B24R_OAUTH_SERVERS={sim.oauth_url} on the server under test)")
    print(f"  OAuth token URL: {sim.token_url}")
    print(f"  Web page:        {base}/sim/     JSON API: {base}/sim/api/state")
    print(f"  Rate limit:      {rate}/s, burst {burst}")
    for p in sim.portals.values():
        print(f"  Portal:          {p.domain}  member_id={p.member_id}")
    if app is None:
        print("No app registered. Register one (the answer carries its client_secret):")
        print(
            f"  curl -X POST {base}/sim/api/apps -H 'Content-Type: application/json' "
            '-d \'{"name": "My app", "install_url": "http://127.0.0.1:8000/b24/install", "api_only": true}\''
        )
    else:
        secret_note = "as given" if client_secret else "generated; pass client_secret to choose it"
        print(f"App {app.client_id} registered (client_secret {secret_note}).")
    print("Install an app on a portal (POSTs ONAPPINSTALL or the install form to its install_url):")
    print(
        f"  curl -X POST {base}/sim/api/apps/<client_id>/install -H 'Content-Type: application/json' "
        f'-d \'{{"portal": "{next(iter(sim.portals))}"}}\''
    )
    if app is not None and install_url:
        for p in list(sim.portals.values()):
            inst = asyncio.run(sim.install_app(app, p))
            outcome = inst.deliveries[-1] if inst.deliveries else None
            status = (outcome.status_code or outcome.error) if outcome else "not notified"
            print(f"Installed on {p.domain}: {install_url} answered {status}", flush=True)
    print("Press Ctrl+C to stop.", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
