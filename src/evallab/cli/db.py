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
        outcome = store.migrate_schema()
    if outcome.moved:
        console.print(
            f"moved {len(outcome.moved)} tables, views and functions of an earlier version "
            f"from schema public into schema {outcome.schema}",
            highlight=False,
        )
    if outcome.applied:
        for m in outcome.applied:
            console.print(f"applied {m.path.name}")
    else:
        console.print("database is up to date")


@app.command("status")
def db_status() -> None:
    """Show which migrations the database has applied; close campaigns whose driver was killed.

    A campaign still marked running whose driver process is gone from this host is marked
    crashed, and its unfinished run folders are moved aside to runs/_interrupted/.
    """
    from evallab.campaign.leftovers import sweep_leftovers
    from evallab.store import Store
    from evallab.store.db import redact

    with Store.open() as store:
        rows = store.migration_status()
        console.print(f"database: {redact(store.dsn)}, schema {store.schema}", highlight=False)
        # The sweep reads columns of the latest schema; a database behind it is left as it is.
        notes = sweep_leftovers(store) if all(r.applied for r in rows) else []
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
    for note in notes:
        console.print(note, highlight=False)


@app.command("start")
def db_start() -> None:
    """Start the embedded server and keep it running until `evallab db stop`."""
    from evallab.store.db import embedded_server, redact

    server = embedded_server()
    lease = server.acquire(permanent=True)
    console.print(
        f"embedded PostgreSQL running until `evallab db stop`: {redact(lease.dsn)} "
        f"(passwords in {server.secrets_path}; `evallab db psql` opens psql)",
        highlight=False,
    )


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


@app.command("roles")
def db_roles(
    admin_dsn: Annotated[
        str | None,
        typer.Option(
            "--admin-dsn",
            help="DSN of the lab's database as a role that may create roles (default: the "
            "embedded server's superuser).",
            envvar="EVALLAB_ADMIN_DATABASE_URL",
        ),
    ] = None,
    writer: Annotated[
        str, typer.Option(help="The lab's role (shared servers; embedded: evallab_writer).")
    ] = "evallab_writer",
    reader: Annotated[str, typer.Option(help="Grafana's read-only role.")] = "evallab_reader",
) -> None:
    """Create or update the lab's writer role and a read-only role for Grafana."""
    from evallab.paths import lab_home
    from evallab.store.db import configured_schema, embedded_server, redact
    from evallab.store.embedded import SECRETS_SECTION
    from evallab.store.roles import setup_roles

    schema = configured_schema()
    if admin_dsn:
        outcome = setup_roles(
            admin_dsn, home=lab_home(), schema=schema, writer=writer, reader=reader
        )
    else:
        server = embedded_server()
        lease = server.acquire()
        try:
            outcome = setup_roles(
                server.admin_dsn,
                home=server.home,
                schema=schema,
                writer=server.writer_credential().user,
                reader=reader,
                section=SECRETS_SECTION,
            )
        finally:
            lease.release()
    console.print(
        f"roles on database {outcome.database}, schema {outcome.schema}:", highlight=False
    )
    console.print(f"  writer (the lab):   {redact(outcome.writer_dsn)}", highlight=False)
    console.print(f"  reader (Grafana):   {redact(outcome.reader_dsn)}", highlight=False)
    console.print(
        f"passwords: {outcome.secrets_file} (mode 0600, readable by you only)", highlight=False
    )
    console.print(
        f"Grafana: EVALLAB_GRAFANA_DB_USER={outcome.reader.user} and "
        "EVALLAB_GRAFANA_DB_PASSWORD=<the reader's password from that file> (see "
        "docs/database.md)",
        highlight=False,
    )
    if admin_dsn:
        console.print(
            "the lab: set EVALLAB_DATABASE_URL to the writer's DSN (with its password from "
            "that file)",
            highlight=False,
        )


@app.command("psql", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def db_psql(
    ctx: typer.Context,
    role: Annotated[
        str, typer.Option(help="writer (the lab's role), reader, or admin (embedded only).")
    ] = "writer",
) -> None:
    """Open psql on the lab's database (extra arguments go to psql, e.g. -c 'select 1').

    The password is handed over in a temporary PGPASSFILE, never on a command line.
    """
    from evallab.errors import ConfigError
    from evallab.paths import lab_home
    from evallab.store.db import configured_dsn, configured_schema, embedded_server
    from evallab.store.embedded import SECRETS_SECTION
    from evallab.store.psql import run_psql
    from evallab.store.roles import dsn_as
    from evallab.store.secrets import read_section

    if role not in ("writer", "reader", "admin"):
        raise ConfigError("unknown role", value=role, fix="use writer, reader or admin")
    schema = configured_schema()
    dsn = configured_dsn()
    if dsn:
        if role != "writer":
            raise ConfigError(
                "with EVALLAB_DATABASE_URL set, `evallab db psql` connects as that DSN's role",
                value=role,
                fix="leave out --role, or run psql yourself with the other role's DSN",
            )
        raise typer.Exit(run_psql(dsn, schema, ctx.args))
    server = embedded_server()
    lease = server.acquire()
    try:
        if role == "admin":
            target = server.admin_dsn
        elif role == "reader":
            found = read_section(lab_home(), SECRETS_SECTION).get("reader")
            if found is None:
                raise ConfigError(
                    "the embedded server has no reader role yet",
                    value=server.secrets_path,
                    fix="run `evallab db roles` first",
                )
            target = dsn_as(server.dsn, found)
        else:
            target = server.dsn
        code = run_psql(target, schema, ctx.args)
    finally:
        lease.release()
    raise typer.Exit(code)
