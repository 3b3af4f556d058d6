"""Optuna's RDB storage in peftlab's database: its tables, made by a migration, and the storage opened on them.

Optuna (pinned in pyproject.toml) defines its own tables (studies, trials, trial_params, trial_values,
trial_intermediate_values, ...). Migration 0010 creates them from those definitions; the storage is then
opened with table creation and Optuna's schema check off, because Optuna's check reads the alembic_version
table, which is peftlab's. Imports optuna, so only the search driver and migrations import this module.
"""
from functools import lru_cache

import sqlalchemy as sa


def _metadata() -> sa.MetaData:
    from optuna.storages._rdb import models  # Optuna's table definitions: the one place they are written

    return models.BaseModel.metadata


def table_names() -> set[str]:
    return set(_metadata().tables)


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic's filter: leave Optuna's tables (and their indexes) out of autogenerate's comparison."""
    if not reflected or compare_to is not None:
        return True
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return table not in table_names()


def create(bind: sa.Connection) -> None:
    """Optuna's tables and its version row (which its storage reads when it opens)."""
    from optuna import version
    from optuna.storages._rdb import models

    metadata = _metadata()
    metadata.create_all(bind)
    info = metadata.tables["version_info"]
    bind.execute(sa.insert(info).values(version_info_id=1, schema_version=models.SCHEMA_VERSION,
                                        library_version=version.__version__))


def drop(bind: sa.Connection) -> None:
    _metadata().drop_all(bind)


@lru_cache(maxsize=4)
def storage(url: str):
    """One RDBStorage per database URL and process (it holds a connection pool)."""
    from optuna.storages import RDBStorage

    engine_kwargs = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        # As app/db.py: wait out a worker's write instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 30}}
    return RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=True, skip_compatibility_check=True)
