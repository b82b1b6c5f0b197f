"""The OSSEA-Migrate lab demo: one command that migrates a lab VM end to end.

``python -m demo`` (or ``tools/demo/run.py``) starts vcsim, the CloudStack simulator, the VMA
API server and the OMA (API + worker) on loopback, then drives a full replication, an
incremental one and a live failover through the OMA's public API only, verifies the bytes and
prints a summary. See tools/demo/README.md.
"""
