"""The `atlas` command line: the root command and its groups. Commands are thin: parse, build a
config, call one function, print a summary (or, with --json, the report as one JSON object).

Heavy libraries (torch, transformer_lens, sae_lens, ray) are imported inside command bodies only, so
`atlas --help` answers fast; tests/test_cli.py checks that.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from atlas.errors import AtlasError
from cli import db, demo, jobs, read
from cli.common import configure_logging


class AtlasGroup(TyperGroup):
    """The root command: progress to stderr (logging at INFO) and an AtlasError as one line
    ``error: ...`` on stderr with exit status 2, whether run as `atlas` or by typer's CliRunner."""

    def invoke(self, ctx):
        configure_logging()
        try:
            return super().invoke(ctx)
        except AtlasError as exc:
            print(f"error: {exc}", file=sys.stderr)
            ctx.exit(2)


app = typer.Typer(
    cls=AtlasGroup,
    help="atlas: a database-backed atlas of transcoder features (WeightLens + CircuitLens).",
    rich_markup_mode=None,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.add_typer(jobs.app, name="ingest")
app.add_typer(demo.app)  # assets, train-transcoders, demo
app.add_typer(read.app)  # inspect, serve, sql, export


def main() -> None:
    app()


if __name__ == "__main__":
    main()
