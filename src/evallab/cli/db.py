"""``evallab db``: migrate, inspect, start and stop the results database."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from evallab.cli.console import console, styled

__all__ = ["app"]

app = typer.Typer(
    help="The results database (embedded PostgreSQL unless EVALLAB_DATABASE_URL is set)."
)


@app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (the package's store/sql/migrations) and re-create the views."""
    from evallab.store import Store

    with Store.open() as store:
        applied = store.migrate()
    if applied:
        for m in applied:
            console.print(f"applied {m.path.name}")
    else:
        console.print("database is up to date")


@app.command("status")
def db_status() -> None:
    """Show which migrations the database has applied."""
    from evallab.store import Store
    from evallab.store.db import redact

    with Store.open() as store:
        rows = store.migration_status()
        console.print(f"database: {redact(store.dsn)}")
    table = Table()
    for col in ("version", "name", "applied", "applied at", "checksum"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            f"{r.version:04d}",
            r.name,
            "yes" if r.applied else styled("[yellow]pending[/]"),
            r.applied_at or "",
            "ok" if r.checksum_ok else styled("[red]EDITED[/]"),
        )
    console.print(table)


@app.command("start")
def db_start() -> None:
    """Start the embedded server and keep it running until `evallab db stop`."""
    from evallab.store.db import embedded_server

    lease = embedded_server().acquire(permanent=True)
    console.print(f"embedded PostgreSQL running until `evallab db stop`: {lease.dsn}")


@app.command("stop")
def db_stop(
    force: Annotated[
        bool,
        typer.Option("--force", help="Stop it even while other lab commands are using it."),
    ] = False,
) -> None:
    """Stop the embedded server, or let the lab commands still using it stop it when they end."""
    from evallab.store.db import embedded_server

    outcome = embedded_server().shutdown(force=force)
    if outcome.stopped:
        console.print("embedded PostgreSQL stopped")
    elif not outcome.was_running:
        console.print("embedded PostgreSQL is not running")
    else:
        console.print(
            f"embedded PostgreSQL keeps running for {len(outcome.clients)} lab "
            f"process{'es' if len(outcome.clients) != 1 else ''} still using it; the last one "
            "stops it when it ends (`evallab db stop --force` stops it now):",
            highlight=False,
        )
        for client in outcome.clients:
            console.print(f"  pid {client.pid}: {client.command}", highlight=False)
