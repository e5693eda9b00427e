"""The Weights & Biases sink (train.loggers 'wandb', options config.tracking.wandb).

Offline by default: the run is written under WORKDIR/wandb/ (and the staged copies of
its artifacts under WORKDIR/wandb/data/), for `wandb sync WORKDIR/wandb/offline-run-*`
to upload later; `wandb leet inspect --json RUN_DIR` reads it back without network.
The run id is kept in WORKDIR/wandb_run_id, so a resumed run continues the same W&B run
(`resume='allow'`) instead of starting a second one.
"""
from __future__ import annotations

import contextlib
import os
import secrets

from mmjax.errors import ConfigError
from mmjax.train import sinks

ID_FILE = "wandb_run_id"
MODES = ("offline", "online", "disabled")


@sinks.register_sink("wandb")
class WandbSink(sinks.Sink):
  """Scalars as history rows ('<split>/<metric>' at the train step), pictures as
  wandb.Image, each eval step's JSON reports as one version of the artifact
  'eval-reports' (aliased 'step_N'), the flattened config as the run's config."""
  requires = ("wandb", "wandb")

  def __init__(self, workdir, options, config, resume_step):
    import wandb
    self.workdir, self._pending, self._pending_step = workdir, [], None
    # Our own id (W&B's are lowercase letters and digits too): known before init.
    run_id = sinks.read_id(workdir, ID_FILE) or secrets.token_hex(6)
    # console='off': absl writes the log; W&B's stdout capture would wrap it twice.
    # No system-stats sampler: a background process per run, on shared CPUs.
    settings = wandb.Settings(console="off", x_disable_stats=True, silent=True,
                              save_code=False, disable_git=True)
    self.run = wandb.init(
        project=options.get("project") or "mmjax", entity=options.get("entity") or None,
        name=sinks.run_name(options, workdir), group=options.get("group") or None,
        tags=list(options.get("tags") or ()) or None, dir=workdir, id=run_id,
        resume="allow", mode=options.get("mode", "offline"),
        config=sinks.flat_config(config) if config is not None else None,
        settings=settings)
    sinks.write_id(workdir, ID_FILE, self.run.id)

  @classmethod
  def check_options(cls, options, key):
    mode = options.get("mode", "offline")
    if mode not in MODES:
      raise ConfigError(f"{key}.mode={mode!r}: choose one of {', '.join(MODES)} "
                        "('offline' writes WORKDIR/wandb/ for a later `wandb sync`).")

  def scalars(self, step, split, scalars, time):
    self._flush_if_past(step)
    self.run.log({f"{split}/{k}": float(v) for k, v in scalars.items()}, step=int(step))

  def image(self, step, tag, png_path):
    import wandb
    self._flush_if_past(step)
    self.run.log({tag: wandb.Image(png_path)}, step=int(step))

  def artifact(self, step, path, name):
    # One artifact version per eval step, not one per file: a step's reports arrive one
    # by one, and are sent when a later step (or the end) shows the step is complete.
    self._flush_if_past(step)
    self._pending.append((path, name))
    self._pending_step = step

  def _flush_if_past(self, step: int) -> None:
    if self._pending and step > self._pending_step:
      self._flush()

  def _flush(self) -> None:
    import wandb
    if not self._pending:
      return
    artifact = wandb.Artifact("eval-reports", type="eval_reports",
                              metadata={"step": int(self._pending_step)})
    # Staged copies live beside the offline run, so the workdir alone can be synced.
    with _env("WANDB_DATA_DIR", os.path.join(self.workdir, "wandb", "data")):
      for path, name in self._pending:
        artifact.add_file(path, name=name)
    self.run.log_artifact(artifact, aliases=["latest", f"step_{self._pending_step}"])
    self._pending = []

  def close(self, failed=False):
    try:
      self._flush()
    finally:
      self.run.finish(exit_code=1 if failed else 0)


@contextlib.contextmanager
def _env(name: str, value: str):
  """Sets the environment variable `name` to `value` unless the user set it."""
  if name in os.environ:
    yield
    return
  os.environ[name] = value
  try:
    yield
  finally:
    os.environ.pop(name, None)
