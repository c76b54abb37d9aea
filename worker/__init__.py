"""Job execution: the job store, the shared runner, the Celery app and the embedded worker.

This package sits between the HTTP service (``service``, which imports it) and the pruning
engine (``prunekit``, which it imports); it never imports ``service``.
"""
