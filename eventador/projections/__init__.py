"""Projections and read models: live SQL views, incremental SQL tables, Python projections.

- ``store.create_view(name, sql)``: a live view over ``events`` and the typed views.
- ``SqlProjection(name, setup_sql=..., apply_sql=...)``: DuckDB tables updated by SQL
  over the new events only; each batch and its checkpoint commit together.
- ``Projection[T]``: a read model folded by Python code, fed event by event (``Projection<T>`` in eventador for Dart).
- ``projection.as_of(store, when)``: an SqlProjection's read model as of a past point,
  built afresh in a scratch database (a ``PastReadModel``).
- ``ProjectionRunner(store, projections)``: catches up, follows live, rebuilds
  (blue/green for SQL), keeps checkpoints and errors in the store's database; one
  driver per kind moves each projection (``sql_driver``, ``python_driver``).
- ``list_projections(store)``, ``rebuild_projection(store, name)``: what the command
  line needs, from the store alone (``admin``).
"""

from eventador.errors import ProjectionNameError
from eventador.projections.admin import list_projections, rebuild_projection
from eventador.projections.lag import Lag
from eventador.projections.past import PastReadModel
from eventador.projections.policies import ErrorPolicy, Retry
from eventador.projections.python import Projection
from eventador.projections.runner import ProjectionRunner
from eventador.projections.sql import SqlProjection, batch_view_name
from eventador.store.live_views import LiveView

__all__ = [
    "ErrorPolicy",
    "Lag",
    "LiveView",
    "PastReadModel",
    "Projection",
    "ProjectionNameError",
    "ProjectionRunner",
    "Retry",
    "SqlProjection",
    "batch_view_name",
    "list_projections",
    "rebuild_projection",
]
