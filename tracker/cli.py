"""The ``tracker`` command line: demo, ui, runs, db upgrade."""

from __future__ import annotations

import sys

import click

from tracker.config import resolve_store_path
from tracker.errors import TrackerError

STORE_HELP = "store folder (default: $TRACKER_STORE or ./tracker-data)"


def _serve(store: str | None, host: str, port: int) -> None:
    # web -> api -> tracker is the dependency direction; only this command reaches back up.
    from web import create_app

    app = create_app(store)
    click.echo(f"Serving the tracker UI on http://{host}:{port}/  (Ctrl-C to stop)")
    app.run(host=host, port=port, debug=False, use_reloader=False, threaded=True)


@click.group()
@click.version_option(package_name="tracker")
def main() -> None:
    """Record, browse and compare what happens inside PyTorch networks while they train."""


@main.command()
@click.option("--steps", default=300, show_default=True, help="training steps per run")
@click.option("--store", default=None, help=STORE_HELP)
@click.option("--serve/--no-serve", default=True, show_default=True, help="serve the UI afterwards")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
def demo(steps: int, store: str | None, serve: bool, host: str, port: int) -> None:
    """Train a small CNN on real digits twice (healthy, sick), record both, serve the UI."""
    from tracker.demo import RUNS, train

    if steps < 1:
        raise click.BadParameter("must be at least 1", param_hint="--steps")
    root = resolve_store_path(store)
    click.echo(f"Recording to {root}")
    ids = {}
    for config in RUNS:
        click.echo(f"Training '{config.name}': {config.description}")
        ids[config.name] = train(config, steps, str(root), progress=click.echo)
    click.echo("")
    for name, run_id in ids.items():
        click.echo(f"  run {name:8s} id {run_id}")
    click.echo(f"  catalog  {root / 'catalog.db'}")
    click.echo(f"  tensors  {root / 'runs'}")
    click.echo("Read it back in Python:")
    reader = f"tracker.open_run('{ids['sick']}', store='{root}')"
    click.echo(f"  {reader}.series('relu1', 'activation', 'dead_frac')")
    if serve:
        _serve(str(root), host, port)


@main.command()
@click.option("--store", default=None, help=STORE_HELP)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
def ui(store: str | None, host: str, port: int) -> None:
    """Serve the web UI and the REST API (one process, for one user)."""
    _serve(store, host, port)


@main.command("runs")
@click.option("--store", default=None, help=STORE_HELP)
@click.option("--project", default=None, help="only this project")
def list_runs_command(store: str | None, project: str | None) -> None:
    """List runs, newest first."""
    from tracker.reader import list_runs

    rows = list_runs(project=project, store=store)
    if not rows:
        click.echo("no runs")
        return
    for r in rows:
        last = r.summary.get("last_step", "-")
        click.echo(f"{r.id}  {r.project:16.16s} {r.name:24.24s} {r.status:9s} steps..{last}")


@main.group()
def db() -> None:
    """Manage the catalog database."""


@db.command("upgrade")
@click.option("--store", default=None, help=STORE_HELP)
@click.option(
    "--database-url",
    default=None,
    help="SQLAlchemy URL (default: $TRACKER_DATABASE_URL or SQLite in the store)",
)
def db_upgrade(store: str | None, database_url: str | None) -> None:
    """Create or migrate the catalog schema to the newest revision."""
    from tracker.catalog.db import HEAD_REVISION
    from tracker.store import Store

    with Store.open(store, database_url) as opened:
        click.echo(f"catalog at revision {HEAD_REVISION} ({opened.catalog.dialect})")


def run() -> None:
    """Entry point that turns tracker errors into one-line messages."""
    try:
        main(standalone_mode=True)
    except TrackerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    run()
