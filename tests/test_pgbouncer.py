"""The generated service behind PgBouncer in transaction mode (Debian's pgbouncer on a free
port): nothing it does relies on session state a transaction pooler loses. The statement
timeout is the role's and checked on each new connection, the migration lock is one of the
migration's transaction, and psycopg2 prepares no statement on the server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from conftest import cannot_run_here
from test_faults import PROBLEM_JSON, list_a_locked_table
from test_migrations import migrate

from service_validator.server import GunicornServer, free_port, http

pytestmark = pytest.mark.slow

BEHIND_A_POOLER = (
    "DB_TRANSACTION_POOLER=true: PostgreSQL is reached through PgBouncer in transaction mode; "
    "DB_STATEMENT_TIMEOUT_MS=300, the role's own, so that a timeout takes 0.3 s"
)
ROLE_TIMEOUT_MS = 300


@pytest.fixture
def pgbouncer(postgres_database):
    """A role with its own statement timeout, owning nothing but what it creates in the test
    database, and PgBouncer (transaction mode) in front of the server: the URL through it."""
    binary = shutil.which("pgbouncer")
    if binary is None:
        cannot_run_here("pgbouncer is not installed (Debian package: .ci/run installs it)")
    role = f"service_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(postgres_database)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} LOGIN")
        cursor.execute(f"ALTER ROLE {role} SET statement_timeout = {ROLE_TIMEOUT_MS}")
        cursor.execute(f"GRANT ALL ON SCHEMA public TO {role}")
    # PgBouncer does not run as root: its files are readable by the postgres user.
    work = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    work.chmod(0o755)
    port = free_port()
    (work / "users.txt").write_text(f'"{role}" ""\n')
    (work / "pgbouncer.ini").write_text(
        "[databases]\n"
        "* = host=127.0.0.1 port=5432\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {work / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 4\nmax_client_conn = 500\n"
    )
    for path in work.iterdir():
        path.chmod(0o644)
    user = ["-u", "postgres"] if os.geteuid() == 0 else []
    log = (work / "log").open("wb")
    process = subprocess.Popen([binary, *user, str(work / "pgbouncer.ini")], stdout=log, stderr=log)
    database = urlsplit(postgres_database).path.lstrip("/")
    url = urlunsplit(("postgresql", f"{role}@127.0.0.1:{port}", f"/{database}", "", ""))
    try:
        for _ in range(100):
            try:
                psycopg2.connect(url, connect_timeout=2).close()
                break
            except psycopg2.OperationalError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
        with admin.cursor() as cursor:
            cursor.execute(f"DROP OWNED BY {role}")
            cursor.execute(f"DROP ROLE {role}")
        admin.close()


def test_the_service_runs_behind_pgbouncer_in_transaction_mode(
    shop, tmp_path, pgbouncer, postgres_database
):
    project, _ = shop
    # What a PgBouncer deployment sets: the pooler mode (no startup options), and the
    # statement timeout the fixture gave the role, which the service checks per connection.
    # The defaults (no pooler) are tested everywhere else on PostgreSQL.
    env = {
        "DATABASE_URL": pgbouncer,
        "DB_TRANSACTION_POOLER": "true",
        "DB_STATEMENT_TIMEOUT_MS": str(ROLE_TIMEOUT_MS),
    }
    # Migrations through the pooler: three at once, each revision applied once.
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "app.migrate"],
            cwd=project,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = sorted(run.communicate(timeout=120)[0].strip() for run in runs)
    assert outputs == [
        "applied 0001; the database is at revision 0001",
        "nothing to apply; the database is at revision 0001",
        "nothing to apply; the database is at revision 0001",
    ], outputs
    with GunicornServer(project, tmp_path / "run", env, because=BEHIND_A_POOLER) as server:
        assert http("GET", f"{server.url}/ready").status == 200
        order = {"customer": "Ada", "total": 3.5, "email": "ada@example.org"}
        created = http("POST", f"{server.url}/orders", order)
        assert created.status == 201, created.body
        record = created.json()
        assert record["created_at"].endswith("+00:00")  # UTC, whatever the session's zone
        assert http("GET", f"{server.url}/orders/{record['id']}").json() == record
        for number in range(40):  # more requests than PgBouncer has server connections
            body = {**order, "email": f"n{number}@example.org"}
            assert http("POST", f"{server.url}/orders", body).status == 201
        # The role's statement timeout cancels a statement stuck behind a lock: 504.
        answer, took = list_a_locked_table(server, postgres_database)
        assert answer.status == 504 and answer.headers["Content-Type"] == PROBLEM_JSON
        assert took < 2, took
        assert http("GET", f"{server.url}/orders?customer=Ada").json()["items"]


def test_a_role_without_the_statement_timeout_is_not_ready(shop, tmp_path, pgbouncer):
    """Behind a transaction pooler the service cannot set the timeout itself: a role whose
    timeout differs from DB_STATEMENT_TIMEOUT_MS is refused, and the log says what to run."""
    project, _ = shop
    env = {"DATABASE_URL": pgbouncer, "DB_TRANSACTION_POOLER": "true"}
    assert migrate(project, env).returncode == 0
    because = "DB_TRANSACTION_POOLER=true: PostgreSQL is reached through PgBouncer"
    with GunicornServer(project, tmp_path / "run", env, because=because) as server:
        ready = http("GET", f"{server.url}/ready")
        assert ready.status == 503
        time.sleep(0.5)
        assert "ALTER ROLE <role> SET statement_timeout = 5000" in server.stderr() + server.stdout()
