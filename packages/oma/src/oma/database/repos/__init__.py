"""Repositories: the functions that read and write the OMA's tables, grouped per table.

Callers hold a connection (``database.connection_context()``); functions that change more than
one row open their own ``database.atomic()`` block. peewee's IntegrityError never leaves this
package: it becomes :class:`oma.errors.ConflictError`.
"""

from . import appliances, contexts, credentials, events, heartbeats, jobs, targets, tokens

__all__ = [
    "appliances",
    "contexts",
    "credentials",
    "events",
    "heartbeats",
    "jobs",
    "targets",
    "tokens",
]
