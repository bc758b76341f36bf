"""Limits and results of sandboxed runs (plain data, no I/O)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from b24robots.errors import ConfigError


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one run. The pool's `caps` bound every per-call value (see `clamp`).

    `memory_mb` is the address-space limit of the child process, interpreter included (about 25 MB).
    `wall_seconds` covers the whole run, time the parent spends serving `ctx.call`/`ctx.batch`
    included; `max_calls` caps those requests per run and `proxied_seconds` the total time the parent
    spends serving them (REST and connection calls together), so a run cannot hold a slot mostly
    waiting on the far side.
    """

    cpu_seconds: float = 5.0
    wall_seconds: float = 10.0
    memory_mb: int = 256
    output_bytes: int = 1_000_000
    file_size_mb: int = 10
    open_files: int = 64
    max_calls: int = 500
    proxied_seconds: float = 8.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"SandboxLimits.{item.name} must be a number, not {type(value).__name__}")
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"SandboxLimits.{item.name} must be a positive finite number, got {value!r}")
        if self.memory_mb < 32:
            raise ConfigError("SandboxLimits.memory_mb must be at least 32 (the interpreter alone needs ~25 MB)")
        if self.open_files < 8:
            raise ConfigError("SandboxLimits.open_files must be at least 8")

    def clamp(self, caps: SandboxLimits) -> SandboxLimits:
        """These limits, each lowered to the matching cap."""
        return SandboxLimits(
            cpu_seconds=min(self.cpu_seconds, caps.cpu_seconds),
            wall_seconds=min(self.wall_seconds, caps.wall_seconds),
            memory_mb=min(self.memory_mb, caps.memory_mb),
            output_bytes=min(self.output_bytes, caps.output_bytes),
            file_size_mb=min(self.file_size_mb, caps.file_size_mb),
            open_files=min(self.open_files, caps.open_files),
            max_calls=min(self.max_calls, caps.max_calls),
            proxied_seconds=min(self.proxied_seconds, caps.proxied_seconds),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SandboxResult:
    """A successful run: the outputs `run` returned, `ctx.log` lines in order, the wall time seen by
    the parent, the number of proxied requests (each `ctx.call`, `ctx.batch` and connection call is one)
    and the seconds the parent spent serving them."""

    outputs: dict[str, Any]
    log: list[str] = field(default_factory=list)
    duration_ms: float = 0.0
    calls: int = 0
    proxied_seconds: float = 0.0
