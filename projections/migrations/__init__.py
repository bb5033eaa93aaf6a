"""Alembic environment of the projection tables (run through projections.migrate)."""
