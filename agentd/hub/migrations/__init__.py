"""Alembic migrations of the hub's database (run by `agentd hub migrate` and at serve start)."""
