"""The `b24robots` command line."""


def main() -> None:
    raise SystemExit("b24robots: the command line is not built yet")
