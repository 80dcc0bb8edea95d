"""Alembic's environment: the hub hands it an open connection (see agentd.hub.migrate)."""

from alembic import context

from agentd.hub.db import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
