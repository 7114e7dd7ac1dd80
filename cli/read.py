"""Commands that read: `atlas inspect` (a transcoder set against its model) and `atlas serve`,
`atlas sql`, `atlas export` (an atlas)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import JsonOption, ModelSpecOption, TranscodersOption, emit, parse_layers

app = typer.Typer(rich_markup_mode=None)


@app.command("inspect")
def inspect_cmd(
    model: ModelSpecOption,
    transcoders: TranscodersOption,
    layers: str | None = typer.Option(None, "--layers", help="Layers to load, e.g. '0,1' or '0-3' (default: all)."),
    text: list[str] | None = typer.Option(
        None, "--text", help="A sentence to measure on (repeatable; default: five built-in sentences)."
    ),
    dtype: str = typer.Option("float32", "--dtype", help="Transcoder dtype: float32, bfloat16, float16."),
    as_json: JsonOption = False,
) -> None:
    """Print what a transcoder set holds, check it against the model, and report reconstruction
    quality (FVE of the MLP output, mean L0) on a few sentences."""
    from atlas.inspect import format_report, inspect_transcoders, report_data

    report = inspect_transcoders(model, transcoders, layers=parse_layers(layers), texts=text or None, dtype=dtype)
    emit(report_data(report), as_json, lambda: format_report(report))


@app.command("serve")
def serve(
    db_path: Path = typer.Option(..., "--db", help="The atlas database, or the symlink `atlas db publish` flips."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, help="Server processes (each opens the atlas read-only)."),
) -> None:
    """Serve the GraphQL API and the feature browser (/, GraphiQL at /graphql) over an atlas, read-only."""
    import os

    import uvicorn

    from api.app import build_app

    print(f"serving {db_path} at http://{host}:{port}/graphql ({workers} worker{'s' * (workers > 1)})", flush=True)
    if workers > 1:  # uvicorn starts each worker from an import string; the path travels in the environment
        build_app(db_path).database.close()  # fail here, once, on a bad path
        os.environ["ATLAS_SERVE_DB"] = str(db_path)
        uvicorn.run("api.app:app_from_env", factory=True, host=host, port=port, workers=workers, log_level="warning")
    else:
        uvicorn.run(build_app(db_path), host=host, port=port, log_level="warning")


@app.command("sql")
def sql(
    query: str = typer.Argument(..., help="One read-only SQL statement (docs/sql.md lists the views)."),
    db_path: Path = typer.Option(..., "--db", help="The atlas database."),
    csv: Path | None = typer.Option(None, "--csv", help="Write the result to this CSV file."),
    parquet: Path | None = typer.Option(None, "--parquet", help="Write the result to this Parquet file."),
    max_rows: int = typer.Option(100, help="Rows printed (files get every row)."),
    timeout_ms: int = typer.Option(60000, help="Time limit of the statement."),
) -> None:
    """Run read-only SQL on an atlas; print a table or write CSV / Parquet."""
    from atlas.sql import run_sql

    run_sql(db_path, query, csv=csv, parquet=parquet, max_rows=max_rows, timeout_ms=timeout_ms)


@app.command("export")
def export_cmd(
    fmt: str = typer.Argument(..., help="circuit-tracer (feature files for its local viewer) or neuronpedia (JSONL)."),
    db_path: Path = typer.Option(..., "--db", help="The atlas database."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    feature: list[str] | None = typer.Option(None, "--feature", help="A public id model/source/index (repeat)."),
    layers: str | None = typer.Option(None, "--layers", help="Only these layers, e.g. '3,6' or '0-5'."),
    limit: int | None = typer.Option(None, "--limit", help="At most this many features (fid order)."),
) -> None:
    """Write an atlas (or a selection) in the file formats of circuit-tracer's viewer or Neuronpedia."""
    from atlas.viewer_export import export

    r = export(db_path, out, fmt, ids=feature or None, layers=parse_layers(layers), limit=limit)
    print(
        f"exported {r.features} features, {r.activations} activations, {r.explanations} explanations "
        f"into {r.files} files under {out}"
    )
