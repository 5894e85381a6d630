"""The studio: an HTTP API and web page over trained models, a thin layer over the pipeline façade.

Data flow, bottom up: ``settings`` (ServeConfig) -> ``db`` (SQLAlchemy models, Alembic ``migrations``) ->
``auth`` (tokens, scopes, sessions) -> ``catalog`` (the served models) -> ``operations`` (a model and
tensors in, files out) -> ``batching`` (quick generation, one forward pass for concurrent requests) ->
``jobs`` / ``job_kinds`` (long work on a huey queue, restart-safe) -> ``ratings`` (human judgements and
their statistics) -> ``app`` (the FastAPI routes) and ``static/`` (the page). ``atelier serve`` is in
:mod:`atelier.cli.serve`.
"""
