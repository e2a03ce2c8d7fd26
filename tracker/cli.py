"""The ``tracker`` command line: demo, ui, runs, diagnose, db upgrade; store care: doctor, compact,
rm, du, retain."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from tracker.config import resolve_store_path
from tracker.errors import TrackerError
from tracker.store import Store

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


SEVERITY_RANK = {"ok": 0, "warning": 1, "error": 2}


@main.command()
@click.argument("run")
@click.option("--store", default=None, help=STORE_HELP)
@click.option("--json", "as_json", is_flag=True, help="print the findings as JSON")
@click.option(
    "--fail-on",
    type=click.Choice(["error", "warning", "never"]),
    default="never",
    show_default=True,
    help="exit with status 1 when a finding this severe (or worse) is found, for CI checks",
)
def diagnose(run: str, store: str | None, as_json: bool, fail_on: str) -> None:
    """Find dead, saturated or silent layers, vanishing or exploding gradients, NaN/Inf and
    BatchNorm drift in RUN (an id, or the newest run with that name)."""
    import json

    from tracker.diagnosis import diagnose as diagnose_run
    from tracker.diagnosis import summary
    from tracker.reader import open_run

    with open_run(run, store=store) as reader:
        findings = diagnose_run(reader)
        worst = summary(findings)
        if as_json:
            body = {"run_id": reader.info.id, "summary": worst}
            click.echo(json.dumps({**body, "findings": [f.to_dict() for f in findings]}, indent=2))
        else:
            click.echo(f"{reader.info.name} ({reader.info.id}): {worst}")
            for f in findings:
                where = f.layer or "(run)"
                steps = f"steps {f.first_step}-{f.last_step}"
                click.echo(f"  {f.severity:7s} {f.code:18s} {where:16s} {steps}")
                click.echo(f"          {f.message}")
                click.echo(f"          what it means: {f.explanation}")
                click.echo(f"          try: {f.suggestion}")
    if fail_on != "never" and SEVERITY_RANK[worst] >= SEVERITY_RANK[fail_on]:
        sys.exit(1)


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

    with Store.open(store, database_url) as opened:
        click.echo(f"catalog at revision {HEAD_REVISION} ({opened.catalog.dialect})")


# -- store care -----------------------------------------------------------------------------------


def _size(nbytes: int) -> str:
    """Bytes in binary units, e.g. '1.5 MiB'."""
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _run_ids(opened: Store, runs: Sequence[str], project: str | None) -> list[str]:
    """Run ids for names or ids given on the command line (all runs if none)."""
    from tracker.reader import find_run

    if runs:
        return [find_run(opened, r, project).id for r in runs]
    return [run.id for run, _ in opened.catalog.runs(project=project)]


@main.command()
@click.option("--store", default=None, help=STORE_HELP)
@click.option("--dry-run", is_flag=True, help="only report what would be repaired")
@click.option(
    "--checksums/--no-checksums",
    default=True,
    show_default=True,
    help="verify every file's checksum (reads every byte)",
)
@click.option(
    "--delete-orphans", is_flag=True, help="delete files of runs that are not in the catalog"
)
def doctor(store: str | None, dry_run: bool, checksums: bool, delete_orphans: bool) -> None:
    """Check the store's files against its catalog and repair what can be repaired.

    Also says whether this install's stats kernel is usable (without it, tracking a training
    run costs more). Exits with 1 if a problem is left in the store (in a dry run: if any was
    found).
    """
    from tracker.capture.stats import KERNEL_STATUS
    from tracker.store.doctor import diagnose

    click.echo(f"stats kernel: {KERNEL_STATUS}")

    with Store.open(store, recover=False) as opened:  # recovery on open would repair already
        findings = diagnose(
            opened, repair_now=not dry_run, checksums=checksums, delete_orphans=delete_orphans
        )
    for finding in findings:
        click.echo(str(finding))
    left = [f for f in findings if f.serious and not f.done]
    if not findings:
        click.echo(f"{opened.location}: no problems found")
    elif dry_run:
        click.echo(f"{len(left)} problem(s) found; run without --dry-run to repair them")
    else:
        click.echo(f"{len(findings) - len(left)} repaired, {len(left)} left")
    if left:
        sys.exit(1)


@main.command()
@click.argument("runs", nargs=-1)
@click.option("--store", default=None, help=STORE_HELP)
@click.option("--project", default=None, help="only runs of this project")
def compact(runs: tuple[str, ...], store: str | None, project: str | None) -> None:
    """Merge runs' segments (default: every run's) into one stats file and per-epoch snapshot
    files, for fast reads; runs being written are skipped."""
    from tracker.store.compact import compact_run
    from tracker.store.errors import RunBusyError

    with Store.open(store) as opened:
        for run_id in _run_ids(opened, runs, project):
            try:
                click.echo(str(compact_run(opened, run_id)))
            except RunBusyError as exc:
                if runs:
                    raise
                click.echo(f"{run_id}: skipped: {exc}")


@main.command("rm")
@click.argument("runs", nargs=-1, required=True)
@click.option("--store", default=None, help=STORE_HELP)
@click.option("--project", default=None, help="the project of runs given by name")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
def rm(runs: tuple[str, ...], store: str | None, project: str | None, yes: bool) -> None:
    """Delete runs (by id or name): their files and catalog rows."""
    from tracker.reader import find_run
    from tracker.store.delete import delete_run
    from tracker.store.usage import run_usage

    with Store.open(store) as opened:
        for info in [find_run(opened, r, project) for r in runs]:
            used = run_usage(opened, info.id).on_disk
            what = f"run {info.id} ({info.project}/{info.name}, {used.files} files, "
            what += f"{_size(used.bytes)})"
            if not yes and not click.confirm(f"Delete {what}?"):
                click.echo(f"kept {info.id}")
                continue
            delete_run(opened, info.id)
            click.echo(f"deleted {what}")


@main.command()
@click.argument("runs", nargs=-1)
@click.option("--store", default=None, help=STORE_HELP)
@click.option("--project", default=None, help="only runs of this project")
def du(runs: tuple[str, ...], store: str | None, project: str | None) -> None:
    """Disk used by runs (default: every run), by kind of file."""
    from tracker.store.usage import run_usage

    total = 0
    with Store.open(store) as opened:
        ids = _run_ids(opened, runs, project)
        click.echo(f"{'run':16s}  {'files':>5s}  {'on disk':>10s}  {'snapshots':>10s}  state")
        for run_id in ids:
            u = run_usage(opened, run_id)
            total += u.on_disk.bytes
            snaps = u.by_kind.get("snapshots")
            state = "compacted" if u.compacted else "segments"
            if u.superseded.files:
                state += f", {u.superseded.files} superseded"
            click.echo(
                f"{run_id:16s}  {u.on_disk.files:5d}  {_size(u.on_disk.bytes):>10s}  "
                f"{_size(snaps.bytes) if snaps else '-':>10s}  {state}"
            )
    click.echo(f"{len(ids)} run(s), {_size(total)}")


@main.command()
@click.argument("runs", nargs=-1)
@click.option(
    "--snapshots-every",
    type=click.IntRange(min=1),
    required=True,
    help="keep snapshots of steps that are multiples of this",
)
@click.option(
    "--older-than",
    type=click.FloatRange(min=0),
    required=True,
    help="only runs that ended more than this many days ago",
)
@click.option("--store", default=None, help=STORE_HELP)
@click.option("--project", default=None, help="only runs of this project")
@click.option("--dry-run", is_flag=True, help="only count what would be removed")
def retain(
    runs: tuple[str, ...],
    snapshots_every: int,
    older_than: float,
    store: str | None,
    project: str | None,
    dry_run: bool,
) -> None:
    """Thin old runs' snapshots to every Nth step; stats and histograms are never touched."""
    from tracker.store.compact import compact_run, count_droppable, retention_candidates

    with Store.open(store) as opened:
        old = set(retention_candidates(opened, older_than))
        chosen = [r for r in _run_ids(opened, runs, project) if r in old]
        for run_id in chosen:
            if dry_run:
                n = count_droppable(opened, run_id, snapshots_every)
                click.echo(f"{run_id}: would drop {n} snapshots")
            else:
                click.echo(str(compact_run(opened, run_id, snapshot_every=snapshots_every)))
        if not chosen:
            click.echo(f"no runs ended more than {older_than:g} days ago")


@main.group()
def token() -> None:
    """Create, list and revoke API tokens (writes to a tracker server need one)."""


@token.command("create")
@click.option("--project", default=None, help="the only project it may write to (default: all)")
@click.option("--name", default="token", show_default=True, help="a label to recognise it by")
@click.option("--store", default=None, help=STORE_HELP)
def token_create(project: str | None, name: str, store: str | None) -> None:
    """Create a token and print it (once: only its hash is stored)."""
    from tracker.catalog.tokens import create_token

    with Store.open(store) as opened:
        info, text = create_token(opened.catalog, name, project)
    click.echo(text)
    scope = f"project {info.project}" if info.project else "every project"
    click.echo(
        f"token {info.id} ({info.name}) for {scope}; keep it: it is not shown again", err=True
    )


@token.command("list")
@click.option("--store", default=None, help=STORE_HELP)
def token_list(store: str | None) -> None:
    """List tokens (ids, names, projects, state); never their secrets."""
    from tracker.catalog.tokens import list_tokens

    with Store.open(store) as opened:
        rows = list_tokens(opened.catalog)
    for t in rows:
        state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
        click.echo(f"{t.id}  {t.name:20s} {t.project or '*':20s} {t.created_at:%Y-%m-%d}  {state}")
    if not rows:
        click.echo("no tokens; create one with `tracker token create --project NAME`")


@token.command("revoke")
@click.argument("token_id")
@click.option("--store", default=None, help=STORE_HELP)
def token_revoke(token_id: str, store: str | None) -> None:
    """Revoke a token by id: requests with it are refused from now on."""
    from tracker.catalog.tokens import check_token_id, revoke_token

    with Store.open(store) as opened:
        info = revoke_token(opened.catalog, check_token_id(token_id))
    click.echo(f"revoked token {info.id} ({info.name})")


@main.command()
@click.option("--store", default=None, help=STORE_HELP)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@click.option("--workers", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--timeout", default=120, show_default=True, help="seconds a request may take")
def server(store: str | None, host: str, port: int, workers: int, timeout: int) -> None:
    """Serve the REST API and the UI with gunicorn: process workers (h5py holds a global lock),
    no preload (no HDF5 handle is shared across a fork)."""
    import os

    from tracker.config import Settings
    from tracker.store.objectstore import is_object_store_url

    chosen = store if store is not None else Settings.from_env().store
    root = chosen if is_object_store_url(chosen) else str(resolve_store_path(chosen))
    Store.open(root).close()  # create and migrate once, before the workers start
    env = {**os.environ, "TRACKER_STORE": root}
    argv = [sys.executable, "-m", "gunicorn", "--workers", str(workers)]
    argv += ["--bind", f"{host}:{port}", "--timeout", str(timeout), "web:create_app()"]
    click.echo(f"Serving {root} on http://{host}:{port}/ with {workers} workers", err=True)
    os.execve(sys.executable, argv, env)


@main.command()
@click.argument("runs", nargs=-1)
@click.option(
    "--spool", default=None, help="spool folder (default: $TRACKER_SPOOL or ~/.cache/tracker/spool)"
)
@click.option("--token", default=None, help="API token (default: $TRACKER_TOKEN)")
def sync(runs: tuple[str, ...], spool: str | None, token: str | None) -> None:
    """Upload what runs logged to a server left in the spool (the server was down at finish)."""
    from pathlib import Path

    from tracker.config import Settings
    from tracker.remote import default_spool, sync_spool

    folder = Path(spool) if spool else default_spool()
    if not folder.is_dir():
        click.echo(f"nothing to sync: {folder} does not exist")
        return
    results = sync_spool(folder, token or Settings.from_env().token, runs)
    left = 0
    for run_id, pending in results.items():
        state = "done" if not pending.operations else f"{pending.operations} operation(s) left"
        click.echo(f"{run_id}: {state}")
        left += pending.operations
    if not results:
        click.echo(f"nothing to sync in {folder}")
    if left:
        sys.exit(1)


def run() -> None:
    """Entry point that turns tracker errors into one-line messages."""
    try:
        main(standalone_mode=True)
    except TrackerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    run()
