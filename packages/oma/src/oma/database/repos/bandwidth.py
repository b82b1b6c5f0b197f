"""bandwidth_limits: one policy per scope (global, a VMA, a job), replaced as a whole.

Evaluation (windows, shares, effective limits) is :mod:`oma.services.bandwidth`.
"""

from __future__ import annotations

from ...services.bandwidth import Policy, stored_policy
from ..fields import now
from ..models import BandwidthLimit

GLOBAL = "global"


def key(scope: str, owner_id: str | None = None) -> str:
    """The row id of a scope: ``global``, ``vma:<id>`` or ``job:<id>``."""
    return GLOBAL if scope == GLOBAL else f"{scope}:{owner_id}"


def get_policy(scope: str, owner_id: str | None = None) -> Policy | None:
    """The scope's policy, or None when none is set."""
    row = BandwidthLimit.get_or_none(BandwidthLimit.id == key(scope, owner_id))
    return None if row is None else to_policy(row)


def to_policy(row: BandwidthLimit) -> Policy:
    """A stored row as a Policy."""
    return stored_policy(row.rate_bps, row.timezone, row.windows)


def set_policy(scope: str, owner_id: str | None, policy: Policy) -> BandwidthLimit:
    """Store (insert or replace) the scope's policy."""
    values = {
        "scope": scope,
        "vma": owner_id if scope == "vma" else None,
        "job": owner_id if scope == "job" else None,
        "rate_bps": policy.rate,
        "timezone": policy.timezone,
        "windows": [w.to_dict() for w in policy.windows],
        "updated_at": now(),
    }
    row_id = key(scope, owner_id)
    if not BandwidthLimit.update(**values).where(BandwidthLimit.id == row_id).execute():
        BandwidthLimit.insert(id=row_id, **values).on_conflict_ignore().execute()
        BandwidthLimit.update(**values).where(BandwidthLimit.id == row_id).execute()
    return BandwidthLimit.get_by_id(row_id)


def delete_policy(scope: str, owner_id: str | None = None) -> bool:
    """Remove the scope's policy; True when there was one."""
    return bool(BandwidthLimit.delete().where(BandwidthLimit.id == key(scope, owner_id)).execute())


def all_policies() -> tuple[Policy | None, dict[str, Policy], dict[str, Policy]]:
    """(global policy, per VMA id, per job id): every stored policy, in one query."""
    glob, vmas, jobs = None, {}, {}
    for row in BandwidthLimit.select():
        if row.scope == GLOBAL:
            glob = to_policy(row)
        elif row.scope == "vma":
            vmas[row.vma_id] = to_policy(row)
        elif row.scope == "job":
            jobs[row.job_id] = to_policy(row)
    return glob, vmas, jobs
