"""PruneKit's HTTP service: upload a model and a spec, poll the job, download the pruned model.

``service.app.create_app`` builds the FastAPI application; jobs are executed by ``worker``
(Celery workers when a broker is configured, otherwise processes supervised by the API).
"""
