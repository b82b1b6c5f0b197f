"""A gunicorn worker class for the APIs: gthread, with gunicorn's own error answers as JSON.

Use ``worker_class = "migration_common.gunicorn_worker.JsonErrorThreadWorker"`` (gunicorn
imports this module in the arbiter, before the workers fork, so the change covers them all).
Importing this module needs gunicorn; the rest of migration_common does not.
"""

from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker

from ._gunicorn import use_json_error_pages

use_json_error_pages()


class JsonErrorThreadWorker(ThreadWorker):
    """gunicorn's gthread worker; its 400/414/431 answers use the APIs' JSON error shape."""
