"""b24robots: custom Bitrix24 robots whose logic runs in Python.

The public surface is this module; everything else is an implementation detail.
"""

from b24robots.robots.context import RobotContext
from b24robots.robots.params import (
    Bool,
    Date,
    DateTime,
    Double,
    File,
    Int,
    Param,
    Params,
    Select,
    String,
    Text,
    User,
)
from b24robots.robots.router import Router
from b24robots.robots.signals import Retry, RobotFailure
from b24robots.robots.spec import RobotSpec
from b24robots.robots.types import ParamType

__version__ = "0.1.0"

__all__ = [
    "Bool",
    "Date",
    "DateTime",
    "Double",
    "File",
    "Int",
    "Param",
    "ParamType",
    "Params",
    "Retry",
    "RobotContext",
    "RobotFailure",
    "RobotSpec",
    "Router",
    "Select",
    "String",
    "Text",
    "User",
    "__version__",
]
