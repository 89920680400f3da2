"""The SQL that gives the lab its roles and its schema on a PostgreSQL server.

One place for it, run by the embedded server's setup (through ``psql``, as the bootstrap
superuser) and by ``evallab db roles`` (through an admin DSN on any server):

* the **writer** — the role the lab works as: a plain login role (no superuser, no role or
  database creation) that owns the lab's schema and nothing else, with the schema as its
  ``search_path``;
* the **reader** (optional) — for Grafana: ``USAGE`` on the schema, ``SELECT`` on its tables and
  views now and (default privileges) later, read-only sessions, nothing else.

Every statement is idempotent, so the same script creates the roles the first time and only
re-asserts them (and sets fresh passwords) afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from evallab.errors import ConfigError
from evallab.store.secrets import scram_verifier
from evallab.store.sql_files import BOOKKEEPING_TABLE, lab_objects

__all__ = ["RoleSpec", "check_identifier", "quote_ident", "role_statements"]

_PLAIN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_identifier(name: str, what: str) -> str:
    """``name`` if it is a plain lower-case SQL identifier, else a ConfigError.

    Plain names need no quoting in the lab's SQL, in ``search_path`` or in Grafana.
    """
    if not _PLAIN.match(name):
        raise ConfigError(
            f"{what} must be a plain lower-case SQL name (letters, digits, _)",
            value=name,
            fix="choose a name like evallab or evallab_writer",
        )
    return name


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class RoleSpec:
    """A login role to create or update, with its password."""

    name: str
    password: str


_LOGIN_ONLY = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"


def _login_role(role: RoleSpec, schema: str) -> list[str]:
    name = quote_ident(role.name)
    return [
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
        f"{_literal(role.name)}) THEN CREATE ROLE {name} {_LOGIN_ONLY}; END IF; END $$",
        f"ALTER ROLE {name} WITH {_LOGIN_ONLY} PASSWORD {_literal(scram_verifier(role.password))}",
        f"ALTER ROLE {name} SET search_path = {quote_ident(schema)}",
    ]


def _adopt_public_objects(writer: str) -> str:
    """Hand the lab's objects that an earlier version created in ``public`` to the writer.

    Earlier versions kept the lab's tables in ``public``, owned by whoever ran them (the
    embedded server's superuser). ``evallab db migrate``, working as the writer, moves them into
    the lab's schema — which takes owning them. Only acts when ``public`` holds the lab's
    bookkeeping table.
    """
    objects = lab_objects()
    relations = ", ".join(_literal(n) for n in sorted(objects.relations))
    functions = ", ".join(_literal(n) for n in sorted(objects.functions)) or "''"
    return f"""DO $$
DECLARE r record;
BEGIN
  IF to_regclass('public.{BOOKKEEPING_TABLE}') IS NULL THEN RETURN; END IF;
  FOR r IN SELECT c.oid::regclass AS obj, c.relkind FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
        AND c.relname IN ({relations}) LOOP
    EXECUTE format('ALTER %s %s OWNER TO %I',
      CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
      r.obj, {_literal(writer)});
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS obj FROM pg_proc p
      JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = 'public' AND p.proname IN ({functions}) LOOP
    EXECUTE format('ALTER FUNCTION %s OWNER TO %I', r.obj, {_literal(writer)});
  END LOOP;
END $$"""


def role_statements(
    *, database: str, schema: str, writer: RoleSpec, reader: RoleSpec | None = None
) -> list[str]:
    """The statements (run connected to ``database`` as an admin) that set up the lab's roles.

    Args:
        database: The lab's database.
        schema: The lab's schema, created owned by the writer if missing.
        writer: The role the lab works as.
        reader: The read-only role for dashboards, or None to leave it out.
    """
    w, s, db = quote_ident(writer.name), quote_ident(schema), quote_ident(database)
    out = [
        *_login_role(writer, schema),
        f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {w}",
        f"CREATE SCHEMA IF NOT EXISTS {s} AUTHORIZATION {w}",
        f"ALTER SCHEMA {s} OWNER TO {w}",
        _adopt_public_objects(writer.name),
    ]
    if reader is not None:
        r = quote_ident(reader.name)
        out += [
            *_login_role(reader, schema),
            f"ALTER ROLE {r} SET default_transaction_read_only = on",
            f"GRANT CONNECT ON DATABASE {db} TO {r}",
            f"GRANT USAGE ON SCHEMA {s} TO {r}",
            f"REVOKE CREATE ON SCHEMA {s} FROM {r}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {r}",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {w} IN SCHEMA {s} GRANT SELECT ON TABLES TO {r}",
        ]
    return out
