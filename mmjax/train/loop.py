"""The one training loop: every model, objective and dataset plugs into it.

`train_and_evaluate` builds everything from the config, checks everything that can be
checked before compute is spent (config values, workdir, dataset, checkpoint shapes),
resumes from the newest good checkpoint in the workdir, and trains with evals, logs and
asynchronous checkpoints on their cadences.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mmjax import config as config_lib
from mmjax import models, objectives, parallel
from mmjax.data import device_ops   # JAX only; TensorFlow enters with mmjax.data's iterators
from mmjax.errors import CheckpointError, ConfigError, NonFiniteLossError
from mmjax.objectives import adversarial
from mmjax.train import checkpoint as checkpoint_lib
from mmjax.train import finetune, optim, robust_eval, state as state_lib, step as step_lib
from mmjax.train import writers


def check_workdir(workdir: str) -> str:
  """Creates the workdir and proves it is writable; raises ConfigError otherwise."""
  if not workdir:
    raise ConfigError("--workdir is required: a directory for checkpoints and metrics.")
  workdir = os.path.abspath(os.path.expanduser(workdir))
  probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"--workdir={workdir} is not writable ({e.strerror or e}). Choose a "
                      "directory you can write to, e.g. --workdir=/tmp/mmjax_run.") from None
  return workdir


@dataclasses.dataclass
class Experiment:
  """Everything built from a config, before any training compute."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Any
  model: Any
  loss_fn: Any
  tx: Any
  schedule: Any
  init_state: Any           # callable () -> TrainState (jitted, sharded by the rules)
  abstract_state: Any       # TrainState of ShapeDtypeStructs with shardings
  example_batch: dict       # host-local batch of zeros, for shapes
  checkpointer: checkpoint_lib.Checkpointer | None   # None in plan mode
  rules: Any = parallel.DEFAULT_RULES  # logical axis -> mesh axes
  updates_per_step: int = 1  # optimizer updates per train step (loss_fn.updates_per_step)

  @property
  def state_shardings(self):
    return jax.tree.map(lambda s: s.sharding, self.abstract_state)

  @property
  def batch_sharding(self):
    """Global batches: leading dimension split over the mesh axes of the 'batch' rule."""
    return parallel.batch_sharding(self.mesh, parallel.batch_axes(self.rules))

  @property
  def per_process_batch(self) -> int:
    return self.config.train.batch_size // jax.process_count()

  @functools.cached_property
  def model_logits(self):
    """(variables, inputs) -> class logits of the model in eval mode. One per experiment:
    compiled attacks are cached per callable, so robust evals and the overfitting guard
    share them."""
    return robust_eval.ModelLogits(self.model)


def build_experiment(config: ml_collections.ConfigDict, workdir: str, mode: str = "train",
                     devices=None, element: dict | None = None) -> Experiment:
  """Validates config and workdir and builds model, objective, optimizer and state.

  `devices` (default: all) are the mesh's devices. `element` ({key: {'shape', 'dtype'}}
  of one preprocessed train example) skips reading the dataset's description, so no
  TensorFlow is needed (plan and bench modes).
  """
  mesh = parallel.make_mesh(config.mesh, devices)
  rules = parallel.rules_from_config(config.mesh)
  config_lib.validate(config, mode, batch_shards=parallel.batch_shards(
      mesh, parallel.batch_axes(rules)))
  workdir = check_workdir(workdir)
  model = models.build_model(config.model)
  loss_fn = adversarial.make_adversarial(
      config.adversarial, objectives.make_objective(config.objective, model))
  # Refused step options fail here, before any compute (e.g. free AT with accumulation).
  loss_fn.check_step(grad_accum_steps=config.optim.grad_accum_steps)
  # A loss may make several updates per step (free AT's replays); the schedule counts
  # updates.
  updates_per_step = loss_fn.updates_per_step
  tx, schedule = optim.make_optimizer(
      config.optim, total_steps=config.train.total_steps * updates_per_step)
  finetune.check_init_from(config)
  if element is None:
    from mmjax import data  # TensorFlow enters here, and only for the input pipeline
    # Unknown or unprepared dataset: fails here, clearly, before any compute.
    element = data.dataset_info(config.data)["train_element"]
  per_process = config.train.batch_size // jax.process_count()
  example = _zeros_batch(element, per_process)
  init_batch = jax.tree.map(lambda x: x[:1], example)
  ema = config.optim.ema_decay > 0
  tx = finetune.freeze_optimizer(
      tx, config.finetune, models.abstract_variables(model, init_batch)["params"])

  def init_fn():
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.train.seed))
    variables = models.init_variables(model, init_batch, init_rng)
    return state_lib.create_train_state(variables, tx, state_rng, ema=ema)

  abstract = jax.eval_shape(init_fn)
  shardings = state_lib.state_shardings(
      abstract, models.logical_partition_specs(model, init_batch), tx, mesh, rules)
  abstract = jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), abstract, shardings)
  # Plans and benchmarks neither read nor write checkpoints.
  checkpointer = None if mode in ("plan", "bench") else checkpoint_lib.Checkpointer(
      workdir, keep=config.train.keep_checkpoints,
      async_save=config.train.async_checkpoints)
  exp = Experiment(config=config, workdir=workdir, mesh=mesh, model=model,
                   loss_fn=loss_fn, tx=tx, schedule=schedule,
                   init_state=jax.jit(init_fn, out_shardings=shardings),
                   abstract_state=abstract, example_batch=example,
                   checkpointer=checkpointer, rules=rules,
                   updates_per_step=updates_per_step)
  parallel.check_process_batches(mesh, exp.batch_sharding, config.train.batch_size)
  return exp


def _zeros_batch(element: dict, batch_size: int) -> dict[str, np.ndarray]:
  """A host-local batch of zeros shaped like the preprocessed examples."""
  batch = {}
  for key, spec in element.items():
    if spec["dtype"] == "string":
      raise ConfigError(f"Train examples still hold the text feature {key!r}; tokenize it "
                        "or drop it in config.data.preprocess_train (e.g. keep(...)).")
    batch[key] = np.zeros((batch_size, *spec["shape"]), np.dtype(spec["dtype"]))
  return batch


def restore_or_init(exp: Experiment) -> tuple[state_lib.TrainState, int]:
  """(state, batches_consumed): the newest good checkpoint, else a fresh state."""
  restored = exp.checkpointer.restore_latest(exp.abstract_state)
  if restored is None:
    state = exp.init_state()
    if not exp.config.finetune.init_from:
      logging.info("No checkpoint in %s: starting from scratch.", exp.checkpointer.directory)
      return state, 0
    params = finetune.load_initial_params(exp.config, state.params,
                                          exp.state_shardings.params)
    ema = None if state.ema_params is None else jax.tree.map(jnp.copy, params)
    return state.replace(params=params, ema_params=ema), 0
  state, consumed, step = restored
  logging.info("Resumed from the checkpoint at step %d (%d batches consumed).", step,
               consumed)
  return state, consumed


def _eval_params(exp: Experiment, state):
  use_ema = exp.config.evals.use_ema and state.ema_params is not None
  return state.ema_params if use_ema else state.params


def make_evaluators(exp: Experiment) -> list:
  """The evaluators beyond the eval loss the config enables, each called as
  `evaluator(params, model_state, step) -> metrics`: robust accuracy
  (evals.robust.attack), reports (evals.report) and the representation evals
  (retrieval, probe, caption)."""
  from mmjax.train import report_eval, representation_eval
  extra = [robust_eval.RobustEvaluator(exp)] if exp.config.evals.robust.attack else []
  if exp.config.evals.report.kind:
    extra.append(report_eval.ReportEvaluator(exp))
  return extra + representation_eval.make_evaluators(exp)


def run_evals(exp: Experiment, state, eval_step, evaluators, step: int
              ) -> dict[str, float]:
  """evaluate_state's metrics, plus each evaluator's."""
  metrics = evaluate_state(exp, state, eval_step)
  params = _eval_params(exp, state)
  for evaluator in evaluators:
    metrics.update(evaluator(params, state.model_state, step))
  return metrics


def evaluate_state(exp: Experiment, state, eval_step) -> dict[str, float]:
  """Metric means over the whole eval split (or evals.max_batches batches)."""
  from mmjax import data
  batch_size = exp.config.evals.batch_size // jax.process_count()
  params = _eval_params(exp, state)
  sums = None
  for i, batch in enumerate(data.make_eval_iterator(exp.config.data, batch_size=batch_size)):
    if exp.config.evals.max_batches and i >= exp.config.evals.max_batches:
      break
    out = eval_step(params, state.model_state,
                    parallel.to_global_batch(batch, exp.mesh, exp.batch_sharding))
    sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
  if sums is None:
    return {}
  sums = jax.device_get(sums)
  n = max(float(sums.pop("num_examples")), 1.0)
  return {k: float(v) / n for k, v in sums.items()} | {"num_examples": n}


def accumulator_factory(exp: Experiment) -> Callable[[], dict]:
  """A zero-argument function returning a fresh metric accumulator for the train step.

  The metric shapes are traced once, here. Each accumulator is placed like the step's
  outputs (replicated on the mesh), so a fresh one hits the same compiled executable as
  the step's own output does; an uncommitted one would make the step compile again.
  """
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), exp.example_batch)
  _, (metrics, _) = jax.eval_shape(
      lambda s, b: exp.loss_fn(s.params, b, s.rng, model_state=s.model_state, train=True),
      exp.abstract_state, batch)
  shapes = dict(metrics, grad_norm=jax.ShapeDtypeStruct((), jnp.float32))
  replicated = parallel.replicated(exp.mesh)
  return lambda: jax.device_put(step_lib.init_metric_accumulator(shapes), replicated)


def train_step_fn(exp: Experiment):
  """The experiment's train step, not yet jitted: (state, batch, acc) -> (state, acc)."""
  config = exp.config
  return step_lib.make_train_step(exp.loss_fn, exp.tx,
                                  grad_accum_steps=config.optim.grad_accum_steps,
                                  ema_decay=config.optim.ema_decay,
                                  trainable=finetune.trainable_fn(config.finetune))


def compile_steps(exp: Experiment):
  """(train_step, eval_step), jitted with fixed shardings and the state donated.

  Fixed in/out shardings make the step's outputs valid inputs of the same executable,
  so it compiles once: without them a fresh state or accumulator (uncommitted arrays)
  differs from the step's outputs, and the second step compiles again. The state keeps
  the shardings of the rules (parameters and optimizer state sharded under FSDP and
  tensor parallelism), and the steps are traced under the rules so that activations
  are constrained too.
  """
  replicated = parallel.replicated(exp.mesh)
  batch = exp.batch_sharding
  state = exp.state_shardings
  step_fn = train_step_fn(exp)
  train_step = jax.jit(
      parallel.with_activation_rules(step_fn, exp.mesh, exp.rules),
      in_shardings=(state, batch, replicated), out_shardings=(state, replicated),
      donate_argnums=(0, 2))
  eval_step = jax.jit(
      parallel.with_activation_rules(step_lib.make_eval_step(exp.loss_fn), exp.mesh,
                                     exp.rules),
      in_shardings=(state.params, state.model_state, batch), out_shardings=replicated)
  return train_step, eval_step


def _write_config(exp: Experiment) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(exp.workdir, "config.json"), "w") as f:
      f.write(exp.config.to_json_best_effort(indent=2))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains to train.total_steps (resuming if the workdir has checkpoints).

  Returns the final eval metrics (and the last train metrics under 'train/...').
  """
  exp = build_experiment(config, workdir, "train")
  t = config.train
  state, consumed = restore_or_init(exp)
  start = int(jax.device_get(state.step))
  if consumed != start:
    raise CheckpointError(f"Checkpoint inconsistency: step {start} but {consumed} batches "
                          "consumed. Use a new --workdir.")
  if start == 0:
    _write_config(exp)
  n_params = models.param_count(state.params)
  logging.info("Model %s: %s parameters; %d devices; global batch %d.", config.model.name,
               f"{n_params:,}", jax.device_count(), t.batch_size)
  finetune.log_trainable(state.params, config.finetune)
  early_stop = robust_eval.early_stop_record(exp.workdir)
  stopped_at = None if early_stop is None else int(early_stop["step"])
  end = t.total_steps
  if stopped_at is not None and stopped_at == start:
    logging.warning("The catastrophic-overfitting guard stopped this run at step %d "
                    "(%s): evaluating without training further. Delete that file to "
                    "train on.", start, os.path.join(exp.workdir, EARLY_STOP_FILE))
    end = start

  from mmjax import data
  # Evaluators first: they check their settings and read their examples before the input
  # pipeline and its threads start.
  evaluators = make_evaluators(exp)
  batches: Iterator = data.make_train_iterator(
      config.data, batch_size=exp.per_process_batch, seed=t.seed, start_batch=consumed)
  device_batches = parallel.prefetch_to_mesh(
      batches, exp.mesh, t.device_prefetch, exp.batch_sharding,
      transform=device_ops.train_transform(config.data, seed=t.seed, start_batch=consumed,
                                           sharding=exp.batch_sharding))
  train_step, eval_step = compile_steps(exp)
  guard = _make_guard(exp, start, state)
  new_acc = accumulator_factory(exp)
  acc = new_acc()
  writer = writers.MetricWriter(exp.workdir)
  progress = writers.Progress(end, start)
  last_train: dict[str, float] = {}
  last_eval: dict[str, float] = {}
  try:
    for step in range(start, end):
      state, acc = train_step(state, next(device_batches), acc)
      done = step + 1
      stop = False
      if guard is not None:
        state, stop = guard.after_step(state, done, writer)
      final = done == end or stop
      log_now = final or (t.log_every and done % t.log_every == 0)
      ckpt_now = t.checkpoint_every and (final or done % t.checkpoint_every == 0)
      eval_now = final or (t.eval_every and done % t.eval_every == 0)
      if log_now or ckpt_now:
        host = jax.device_get(acc)
        _raise_if_nonfinite(host, exp.checkpointer)
      if log_now:
        count = max(int(host["count"]), 1)
        last_train = {k: float(v) / count for k, v in host["sums"].items()}
        last_train["lr"] = float(exp.schedule(step * exp.updates_per_step))
        last_train["steps_per_sec"] = progress.log(done, last_train)
        writer.write(done, "train", last_train)
        acc = new_acc()
      if ckpt_now:
        exp.checkpointer.save(done, state, batches_consumed=done)
      if stop:
        early_stop = guard.record
      if eval_now:
        last_eval = _eval_and_log(exp, state, eval_step, evaluators, done, writer,
                                  early_stop)
      if stop:
        break
    if end == start:   # resumed after an early stop: evaluate the kept parameters
      last_eval = _eval_and_log(exp, state, eval_step, evaluators, start, writer,
                                early_stop)
  finally:
    exp.checkpointer.close()
    writer.close()
    # Tear the input pipeline down here, in order: left to interpreter shutdown, the
    # suspended generator and its tf.data iterator were destroyed late and slowly
    # (measured: 38 s of hang after a 1,000-step quickstart, growing with run length).
    device_batches.close()
    del device_batches, batches
  return dict(last_eval) | {f"train/{k}": v for k, v in last_train.items()}


def _eval_and_log(exp, state, eval_step, evaluators, step, writer, early_stop=None
                  ) -> dict[str, float]:
  metrics = run_evals(exp, state, eval_step, evaluators, step)
  # An early stop is part of every later eval, so no one reads these numbers as a full run.
  metrics.update(robust_eval.early_stop_metrics(early_stop))
  writer.write(step, "eval", metrics)
  logging.info("eval at step %d: %s", step,
               ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
  return metrics


# ---- the catastrophic-overfitting guard (mmjax/train/robust_eval.py) ----
EARLY_STOP_FILE = robust_eval.EARLY_STOP_FILE   # callers and tests name it here


def _make_guard(exp: Experiment, start_step: int, state):
  if not exp.config.adversarial.guard_every:
    return None
  from mmjax import data
  # The held batch: the first training batch (fixed, so every check sees the same one).
  held = next(data.make_train_iterator(
      exp.config.data, batch_size=exp.per_process_batch, seed=exp.config.train.seed,
      start_batch=0))
  transform = device_ops.train_transform(exp.config.data, seed=exp.config.train.seed)
  if transform is not None:   # the held batch is training batch 0 as the step saw it
    held = jax.device_get(transform(held, 0))
  return robust_eval.OverfittingGuard(exp, held, start_step, state)


def _raise_if_nonfinite(host_acc: dict, checkpointer: checkpoint_lib.Checkpointer) -> None:
  bad = int(host_acc["first_nonfinite_step"])
  if bad < 0:
    return
  checkpointer.wait()
  last = checkpointer.latest_step()
  kept = (f"the last good checkpoint (step {last}) is kept in {checkpointer.directory} and "
          "a rerun resumes from it" if last is not None else "no checkpoint was written yet")
  raise NonFiniteLossError(
      f"Training loss became NaN or Inf at step {bad + 1}; stopped without saving that "
      f"state; {kept}. Lower optim.learning_rate, set optim.clip_norm, or check the inputs.")


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """--mode=eval: evaluates the newest checkpoint in the workdir."""
  exp = build_experiment(config, workdir, "eval")
  try:
    restored = exp.checkpointer.restore_latest(exp.abstract_state)
  finally:
    exp.checkpointer.close()
  if restored is None:
    raise CheckpointError(f"No checkpoint in {exp.checkpointer.directory} to evaluate. "
                          "Train first with --mode=train and the same --workdir.")
  state, _, step = restored
  metrics = run_evals(exp, state, compile_steps(exp)[1], make_evaluators(exp), step)
  writer = writers.MetricWriter(exp.workdir)
  writer.write(step, "eval", metrics)
  writer.close()
  logging.info("eval of step %d: %s", step, json.dumps(metrics))
  return metrics
