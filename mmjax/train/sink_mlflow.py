"""The MLflow sink (train.loggers 'mlflow', options config.tracking.mlflow).

Through `MlflowClient` only (no fluent `mlflow.start_run` global state). Without a
tracking_uri the store is MLflow's file store under the workdir, WORKDIR/mlruns/
(artifacts included): no server, no database, opened in milliseconds, and readable by
`MlflowClient('file:WORKDIR/mlruns')` or `mlflow ui --backend-store-uri`. MLflow 3 keeps
that store in maintenance mode and refuses it unless MLFLOW_ALLOW_FILE_STORE is set,
which this sink sets for a `file:` URI; a sqlite store (`sqlite:///PATH/mlflow.db`, which
needs SQLAlchemy and Alembic) took 4-9 s to open on 2 busy CPU cores instead. The run id
is kept in WORKDIR/mlflow_run_id, so a resumed run continues the same MLflow run.
"""
from __future__ import annotations

import os

from absl import logging

from mmjax.train import sinks

ID_FILE = "mlflow_run_id"
_BATCH = 100   # MLflow's log_batch takes at most 100 params / 1000 metrics per call


@sinks.register_sink("mlflow")
class MlflowSink(sinks.Sink):
  """Scalars as metrics '<split>/<metric>' at the train step, pictures with log_image
  (key = tag, step), JSON reports as artifacts under their workdir-relative folder, the
  flattened config as params."""
  requires = ("mlflow", "mlflow")

  def __init__(self, workdir, options, config, resume_step):
    from mlflow.tracking import MlflowClient
    uri = options.get("tracking_uri") or "file:" + os.path.join(workdir, "mlruns")
    if uri.startswith("file:"):
      # MLflow 3 refuses its file store unless told; read where MLflow opens any store.
      os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    self.client, self.uri = MlflowClient(uri), uri
    name = options.get("experiment") or "mmjax"
    experiment = self.client.get_experiment_by_name(name)
    if experiment is None:
      experiment_id = self.client.create_experiment(name)
    else:
      experiment_id = experiment.experiment_id
    self.run_id = self._resumed(sinks.read_id(workdir, ID_FILE))
    if self.run_id is None:
      run = self.client.create_run(experiment_id,
                                   run_name=sinks.run_name(options, workdir, "run_name"),
                                   tags={"mmjax.workdir": workdir})
      self.run_id = run.info.run_id
      sinks.write_id(workdir, ID_FILE, self.run_id)
    if config is not None:
      self._log_params(sinks.flat_config(config))

  def _resumed(self, run_id: str | None) -> str | None:
    """`run_id` marked running again when this store holds it, else None."""
    if run_id is None:
      return None
    from mlflow.exceptions import MlflowException
    try:
      self.client.get_run(run_id)
    except MlflowException:
      logging.warning("MLflow run %s (WORKDIR/%s) is not in %s: starting a new run.",
                      run_id, ID_FILE, self.uri)
      return None
    self.client.update_run(run_id, status="RUNNING")
    return run_id

  def _log_params(self, flat: dict) -> None:
    from mlflow.entities import Param
    # A param is written once per run: a resumed run adds only new keys (a changed
    # value, allowed by train.allow_config_change, stays in config.step_N.json).
    have = self.client.get_run(self.run_id).data.params
    params = [Param(k, str(v)[:6000]) for k, v in flat.items() if k not in have]
    for i in range(0, len(params), _BATCH):
      self.client.log_batch(self.run_id, params=params[i:i + _BATCH])

  def scalars(self, step, split, scalars, time):
    from mlflow.entities import Metric
    ms = int(time * 1000)
    metrics = [Metric(f"{split}/{k}", float(v), ms, int(step)) for k, v in scalars.items()]
    for i in range(0, len(metrics), 10 * _BATCH):
      self.client.log_batch(self.run_id, metrics=metrics[i:i + 10 * _BATCH])

  def image(self, step, tag, png_path):
    self.client.log_image(self.run_id, sinks.read_png(png_path), key=tag, step=int(step))

  def artifact(self, step, path, name):
    folder = os.path.dirname(name)
    self.client.log_artifact(self.run_id, path, artifact_path=folder or None)

  def close(self, failed=False):
    self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")
