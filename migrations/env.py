"""Alembic environment: the URL comes from peftlab's settings, the tables from app.tables."""
from alembic import context

import app.tables  # noqa: F401  (registers every table on Base.metadata)
from app.db import Base, make_engine
from app.experiments.optuna_tables import include_object  # Optuna's tables are not ours to compare
from app.config import get_settings

config = context.config
target_metadata = Base.metadata



def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url,
                      target_metadata=target_metadata, literal_binds=True, render_as_batch=True,
                      include_object=include_object)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        get_settings().ensure_dirs()  # the SQLite file's folder must exist
        url = get_settings().resolved_database_url
    engine = make_engine(url)
    with engine.connect() as connection:
        # Batch mode lets later migrations alter SQLite tables (it cannot ALTER most things).
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
