"""`python -m rbench` is the `rbench` command."""

from .frontend.cli import main

main()
