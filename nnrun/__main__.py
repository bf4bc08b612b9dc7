"""`python -m nnrun` runs the command-line interface."""

from nnrun.cli import main

main()
