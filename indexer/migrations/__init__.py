"""Alembic migrations of the catalog; shipped inside the package so ``tvr db upgrade`` works when installed."""
