"""``python -m circuitreg`` runs the command line."""

from circuitreg.cli import main

main()
