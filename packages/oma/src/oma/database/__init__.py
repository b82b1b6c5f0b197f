"""The OMA database: connection proxy, models, numbered migrations and repositories.

Typical use::

    from oma.database import init_db, database, upgrade
    init_db(config.database_url)
    upgrade()
    with database.connection_context():
        job = repos.jobs.create_job(context_id)
"""

from .db import BaseModel, database, dialect, init_db, is_sqlite
from .migrate import applied, pending, upgrade

__all__ = [
    "BaseModel",
    "applied",
    "database",
    "dialect",
    "init_db",
    "is_sqlite",
    "pending",
    "upgrade",
]
