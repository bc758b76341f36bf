"""Run stored robot code isolated, fast, with a capability API (``ctx``).

See docs/stored-code.md for what stored code may do and how it is contained.
"""

from b24robots.sandbox._outcome import LIMIT_NAMES
from b24robots.sandbox._policy import ALLOWED_MODULES, SourceProblem, check_source
from b24robots.sandbox.limits import SandboxLimits, SandboxResult
from b24robots.sandbox.pool import SandboxPool
from b24robots.sandbox.proxy import DEFAULT_METHODS, MethodPolicy, RunProxy, parse_patterns

__all__ = [
    "ALLOWED_MODULES",
    "DEFAULT_METHODS",
    "LIMIT_NAMES",
    "MethodPolicy",
    "RunProxy",
    "SandboxLimits",
    "SandboxPool",
    "SandboxResult",
    "SourceProblem",
    "check_source",
    "parse_patterns",
]
