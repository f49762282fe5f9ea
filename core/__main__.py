"""`python -m rbench` is the `rbench` command."""

from .cli import main

main()
