"""``python -m metaeol.cli``: the command line."""

from metaeol.cli import main

main()
