"""A throw-away PostgreSQL server for benchmarks: tests/pgserver.py, but with durable commits.

The test suite's server runs with fsync and synchronous_commit off (fast, not durable); intake is
measured "with durable commit", so here both are on, as in production.
"""

from __future__ import annotations

import socket
import time

import psycopg
from tests.pgserver import PostgresServer


class DurablePostgres(PostgresServer):
    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-w", "-l", str(self.root / "log"), "start")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not start")

    def new_database(self, name: str) -> str:
        """Create an empty database; its SQLAlchemy URL."""
        with psycopg.connect(self.url().replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def settings(self) -> dict[str, str]:
        with psycopg.connect(self.url().replace("+psycopg", ""), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'server_version')"
            ).fetchall()
        return {str(k): str(v) for k, v in rows}


def available() -> bool:
    try:
        DurablePostgres()
    except RuntimeError:
        return False
    return True
