"""`python -m lectern.cli`: the `lectern` command."""

from lectern.cli import main

main()
