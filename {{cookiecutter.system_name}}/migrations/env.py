"""Alembic's environment for this service's migrations (migrations/versions/).

Run by python -m app.migrate (app/migrate.py), never on its own: it hands over the connection
it holds the migration lock on, or, with --sql, only the dialect whose SQL to print.
"""

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # --sql: the SQL of each pending revision, nothing applied
    context.configure(
        dialect_name=config.attributes["dialect"],
        literal_binds=True,
        transactional_ddl=True,
        output_buffer=config.output_buffer,
    )
else:
    # One transaction for every pending revision: all of them are applied, or none.
    context.configure(connection=connection, transactional_ddl=True)
with context.begin_transaction():
    if connection is not None:
        key = config.attributes.get("transaction_lock")
        if key is not None:  # behind a transaction pooler: a lock of this transaction
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (key,))
        # Read under the lock: what this run finds, and so what it applies.
        config.attributes["revision_before"] = context.get_context().get_current_revision()
    context.run_migrations()
