"""b24robots: custom Bitrix24 robots whose logic runs in Python."""

__version__ = "0.1.0"
