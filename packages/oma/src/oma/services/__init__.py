"""Long-running services of ``oma worker``: progress poller, workflow runner, export recovery.

Nothing here runs inside the API process; ``oma worker`` calls :func:`worker.run_worker`.
"""
