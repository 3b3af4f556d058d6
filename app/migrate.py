"""Runs Alembic migrations programmatically: the only way the schema is created or changed."""
from alembic import command
from alembic.config import Config

from app.resources import ROOT

MIGRATIONS_DIR = ROOT / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None) -> None:
    command.upgrade(alembic_config(url), "head")
