"""Alembic environment: the URL comes from the caller's connection, alembic.ini, or the tvr settings."""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from indexer.catalog import Base, include_in_autogenerate
from indexer.db import make_engine
from indexer.settings import Settings

config = context.config
target_metadata = Base.metadata
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)  # the `alembic` command line only


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().catalog_url


def _configure(**kwargs: Any) -> None:
    url = kwargs.get("url") or str(kwargs["connection"].engine.url)
    context.configure(
        target_metadata=target_metadata,
        include_name=include_in_autogenerate,  # migration 0006's full-text objects are SQL, not models
        render_as_batch=url.startswith("sqlite"),  # SQLite alters tables by copying them
        compare_type=True,
        **kwargs,
    )


def run_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # indexer.db.upgrade passes its own connection
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
