"""Workflows run by ``oma worker``: a step engine and the replication workflow.

Each workflow is a list of named steps stored in the database (``workflows`` and
``workflow_steps``), each idempotent with a compensating action, so a crashed worker's
workflow resumes from its last finished step (see :mod:`oma.workflows.engine`).
"""
