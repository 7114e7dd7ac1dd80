"""`python -m cli ARGS` runs `atlas ARGS`."""

from cli.main import main

main()
