"""Workflows run by ``oma worker``: one step engine (:mod:`~oma.workflows.engine`) and one list
of kinds (:mod:`~oma.workflows.kinds`): replication, cleanup, live failover and its rollback.

Each workflow is a list of named steps stored in the database (``workflows`` and
``workflow_steps``), each idempotent, so a crashed worker's workflow resumes from its last
finished step. Replica volumes are attached, exported, detached and deleted in one place
(:mod:`~oma.workflows.replicas`).
"""
