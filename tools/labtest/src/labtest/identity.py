"""A lab VMA's TLS identity, provisioned directly (what enrollment does, without the exchange).

:func:`provision_vma_identity` issues the VMA's client certificate from the lab OMA's CA
(``<OMA data dir>/pki``), stores it with the pinned CA in the VMA's data directory
(:func:`vma.services.identity.save`) and pins its subject and fingerprint on the appliance row,
so the OMA exports that VMA's replicas over TLS to it alone and the VMA's migratekit connects
with ``nbds://``. A running VMA picks the identity up at its next job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def provision_vma_identity(oma: Any, vma_id: str, vma_data_dir: str | Path) -> str:
    """Give the registered VMA ``vma_id`` a certificate from ``oma``'s CA (an ``OmaInfo``),
    saved in ``vma_data_dir``; returns the certificate's subject."""
    from playhouse.db_url import connect

    from oma.nbd.tls import locked_ca
    from oma.pki import vma_common_name
    from vma.services import identity

    url = oma.config_env.get("OMA_DATABASE_URL") or f"sqlite:///{Path(oma.data_dir) / 'oma.db'}"
    db = connect(url)
    try:
        p = db.param
        row = db.execute_sql(f"SELECT name FROM vma_appliances WHERE id = {p}", (vma_id,))
        found = row.fetchone()
        if found is None:
            raise LookupError(f"no VMA appliance {vma_id} in {url}")
        with locked_ca(Path(oma.data_dir)) as ca:
            issued = ca.issue_client(vma_common_name(found[0]))
        identity.save(Path(vma_data_dir), issued.cert_pem, issued.key_pem, ca.cert_pem)
        with db.atomic():
            db.execute_sql(
                f"UPDATE vma_appliances SET cert_subject = {p}, cert_fingerprint = {p} "
                f"WHERE id = {p}",
                (issued.subject, issued.fingerprint, vma_id),
            )
    finally:
        db.close()
    return issued.subject
