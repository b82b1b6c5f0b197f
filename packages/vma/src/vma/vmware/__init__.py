"""The VMA's vSphere layer (pyVmomi): discovery, snapshots, CBT and power.

``VSphereClient`` is the one entry point; see ``client.py``. Modules: ``faults`` (error
translation), ``properties`` (bulk PropertyCollector reads), ``inventory`` (VM dicts),
``tasks``, ``power``, ``snapshots``, ``cbt`` and ``provisioning`` (CreateVM for the lab).
"""

from __future__ import annotations

from vma.vmware.client import VSphereClient

__all__ = ["VSphereClient"]
