"""`python -m cli ARGS` runs `atlas ARGS`."""

from cli.main import app

app(prog_name="atlas")
