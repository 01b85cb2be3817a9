"""The engine, as full-stack-fastapi-template's app/core/db.py makes it: one per process."""

import os

from sqlmodel import SQLModel, create_engine

from app import models  # noqa: F401  (registers the orders table on SQLModel.metadata)

# The template builds postgresql+psycopg://... from its settings; here from DATABASE_URL.
SQLALCHEMY_DATABASE_URI = os.environ["DATABASE_URL"].replace(
    "postgresql://", "postgresql+psycopg://", 1
)

engine = create_engine(str(SQLALCHEMY_DATABASE_URI))


def init_db() -> None:
    """Create the tables: the template's prestart step (Alembic there, create_all here)."""
    SQLModel.metadata.create_all(engine)
