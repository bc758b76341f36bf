"""`python -m b24robots` is the `b24robots` command."""

from b24robots.cli import main

main()
