"""The one training loop: every model, objective and dataset plugs into it.

`train_and_evaluate` builds everything from the config, checks everything that can be
checked before compute is spent (config values, workdir, dataset, checkpoint shapes),
resumes from the newest good checkpoint in the workdir, and steps; logs, evaluators,
asynchronous checkpoints and plug-ins such as the overfitting guard run as hooks
(mmjax/train/hooks.py) on their cadences.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mmjax import models, objectives, parallel
from mmjax.data import device_ops   # JAX only; TensorFlow enters with mmjax.data's iterators
from mmjax.errors import CheckpointError, ConfigError, MmjaxError
from mmjax.evals import batched, evaluators as evaluators_lib
from mmjax.objectives import adversarial
from mmjax.train import checkpoint as checkpoint_lib
from mmjax.train import checks, finetune, hooks as hooks_lib, optim, resume_check
from mmjax.train import overfitting_guard, preemption  # noqa: F401  (register hooks)
from mmjax.train import state as state_lib, step as step_lib, workdir_lock, writers


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
  lock: workdir_lock.WorkdirLock | None = None   # held by train and eval runs
  metric_shapes: Any = None   # {metric: ShapeDtypeStruct} of the loss (one abstract trace)
  created_workdir: bool = False   # this run created the workdir
  training_started: bool = False   # the first train step was launched

  def close(self) -> None:
    """Finishes pending checkpoint writes and releases the workdir."""
    try:
      if self.checkpointer is not None:
        self.checkpointer.close()
    finally:
      if self.lock is not None:
        self.lock.release()

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
    return batched.ModelLogits(self.model)

  @functools.cached_property
  def eval_step(self):
    """(params, model_state, global batch) -> metric sums, jitted with fixed shardings
    and traced under the rules (the eval loss evaluator's step)."""
    state = self.state_shardings
    return jax.jit(
        parallel.with_activation_rules(step_lib.make_eval_step(self.loss_fn), self.mesh,
                                       self.rules),
        in_shardings=(state.params, state.model_state, self.batch_sharding),
        out_shardings=parallel.replicated(self.mesh))


def build_experiment(config: ml_collections.ConfigDict, workdir: str, mode: str = "train",
                     devices=None, element: dict | None = None) -> Experiment:
  """Validates config and workdir and builds model, objective, optimizer and state.

  `devices` (default: all) are the mesh's devices. `element` ({key: {'shape', 'dtype'}}
  of one preprocessed train example) skips reading the dataset's description, so no
  TensorFlow is needed (plan and bench modes).
  """
  mesh = parallel.make_mesh(config.mesh, devices)
  rules = parallel.rules_from_config(config.mesh)
  checks.check_config(config, mode, batch_shards=parallel.batch_shards(
      mesh, parallel.batch_axes(rules)))
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
    # Plus the loss's own state across steps (e.g. Group DRO's weights): checkpointed
    # with the rest.
    variables = {**models.init_variables(model, init_batch, init_rng),
                 **loss_fn.initial_state()}
    return state_lib.create_train_state(variables, tx, state_rng, ema=ema)

  abstract = jax.eval_shape(init_fn)
  shardings = state_lib.state_shardings(
      abstract, models.logical_partition_specs(model, init_batch), tx, mesh, rules)
  abstract = jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), abstract, shardings)
  # One abstract trace of the loss: what only tracing finds (an attacked modality the
  # batch lacks, an output the objective needs) fails here, before the workdir is touched.
  _, (metric_shapes, _) = jax.eval_shape(
      lambda s, b: loss_fn(s.params, b, s.rng, model_state=s.model_state, train=True),
      abstract, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), example))
  # Everything above is checked before the workdir is created or touched; a run holds the
  # workdir's lock before its checkpointer opens (and tidies) the checkpoint directory.
  # Plans and benchmarks neither read nor write checkpoints.
  created = not os.path.exists(os.path.abspath(os.path.expanduser(workdir or ".")))
  workdir = check_workdir(workdir)
  lock, checkpointer = None, None
  if mode not in ("plan", "bench"):
    if jax.process_index() == 0:   # one lock per run: its processes share the workdir
      lock = workdir_lock.WorkdirLock(workdir)
      lock.acquire()
    checkpointer = checkpoint_lib.Checkpointer(
        workdir, keep=config.train.keep_checkpoints,
        async_save=config.train.async_checkpoints)
  exp = Experiment(config=config, workdir=workdir, mesh=mesh, model=model,
                   loss_fn=loss_fn, tx=tx, schedule=schedule,
                   init_state=jax.jit(init_fn, out_shardings=shardings),
                   abstract_state=abstract, example_batch=example,
                   checkpointer=checkpointer, rules=rules,
                   updates_per_step=updates_per_step, lock=lock,
                   metric_shapes=metric_shapes, created_workdir=created)
  try:
    parallel.check_process_batches(mesh, exp.batch_sharding, config.train.batch_size)
  except Exception:
    exp.close()
    raise
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


def accumulator_factory(exp: Experiment) -> Callable[[], dict]:
  """A zero-argument function returning a fresh metric accumulator for the train step.

  The metric shapes were traced once, by build_experiment. Each accumulator is placed like the step's
  outputs (replicated on the mesh), so a fresh one hits the same compiled executable as
  the step's own output does; an uncommitted one would make the step compile again.
  """
  shapes = dict(exp.metric_shapes, grad_norm=jax.ShapeDtypeStruct((), jnp.float32))
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
  """(train_step, eval_step), jitted with fixed shardings (the train step's state
  donated).

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
  return train_step, exp.eval_step


def _write_config(exp: Experiment) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(exp.workdir, "config.json"), "w") as f:
      f.write(exp.config.to_json_best_effort(indent=2))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains to train.total_steps (resuming if the workdir has checkpoints).

  Returns the final eval metrics (and the last train metrics under 'train/...').
  """
  exp = build_experiment(config, workdir, "train")
  try:
    return _train(exp)
  except MmjaxError:
    # A user error found before the first step (an evaluator's examples lack a key, a
    # resume under another config, ...) leaves no trace of a workdir this run created.
    exp.close()
    if exp.created_workdir and not exp.training_started:
      shutil.rmtree(exp.workdir, ignore_errors=True)
    raise
  finally:
    exp.close()


def _train(exp: Experiment) -> dict[str, float]:
  config, t = exp.config, exp.config.train
  state, consumed = restore_or_init(exp)
  start = int(jax.device_get(state.step))
  if consumed != start:
    raise CheckpointError(f"Checkpoint inconsistency: step {start} but {consumed} batches "
                          "consumed. Use a new --workdir.")
  if start > t.total_steps:
    raise ConfigError(f"train.total_steps={t.total_steps} is below the step of the newest "
                      f"checkpoint in {exp.checkpointer.directory} ({start}): this run would "
                      f"do nothing. Set --config.train.total_steps above {start} to train "
                      "on, evaluate that checkpoint with --mode=eval, or use a new "
                      "--workdir.")
  if start == 0:
    _write_config(exp)
  else:   # every process that sees config.json refuses alike
    resume_check.check_resume(exp.workdir, config, start)
  if start and start == t.total_steps:
    logging.info("The newest checkpoint is at train.total_steps=%d already: nothing to "
                 "train (raise total_steps to train on; --mode=eval evaluates it).", start)
  n_params = models.param_count(state.params)
  logging.info("Model %s: %s parameters; %d devices; global batch %d.", config.model.name,
               f"{n_params:,}", jax.device_count(), t.batch_size)
  finetune.log_trainable(state.params, config.finetune)

  from mmjax import data
  hooks = hooks_lib.build_hooks(exp)   # evaluators read their examples here
  batches = data.make_train_iterator(
      config.data, batch_size=exp.per_process_batch, seed=t.seed, start_batch=consumed)
  device_batches = parallel.prefetch_to_mesh(
      batches, exp.mesh, t.device_prefetch, exp.batch_sharding,
      transform=device_ops.train_transform(config.data, seed=t.seed, start_batch=consumed,
                                           sharding=exp.batch_sharding))
  train_step, _ = compile_steps(exp)
  new_acc = accumulator_factory(exp)
  # Rows a killed run wrote after the step this run resumes from are dropped, so the
  # metrics keep one row per step and split.
  run = hooks_lib.Run(exp=exp, state=state, acc=new_acc(), new_acc=new_acc,
                      writer=writers.MetricWriter(exp.workdir, resume_step=start),
                      start=start, end=t.total_steps, step=start)
  try:
    for hook in hooks:
      hook.at_start(run)
    exp.training_started = True
    for step in range(run.start, run.end):
      run.state, run.acc = train_step(run.state, next(device_batches), run.acc)
      run.step = step + 1
      for hook in hooks:
        hook.after_step(run)
      if run.stop:
        break
    for hook in hooks:
      hook.at_end(run)
  finally:
    for hook in hooks:
      hook.close()
    exp.checkpointer.close()
    run.writer.close()
    # Tear the input pipeline down here, in order: left to interpreter shutdown, the
    # suspended generator and its tf.data iterator were destroyed late and slowly
    # (docs/benchmarks.md, "Fixed: a slow exit after long runs").
    device_batches.close()
    del device_batches, batches
  return dict(run.last_eval) | {f"train/{k}": v for k, v in run.last_train.items()}


def explain(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """--mode=explain: the `attribution` evaluator with config.explain's options, alone, on
  the newest checkpoint (metrics 'explain/...', files in WORKDIR/attributions_explain/)."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.evals.explain = ml_collections.ConfigDict(
        dict(type="attribution", **config.explain.to_dict()))
  return evaluate(config, workdir, ["explain"])


def evaluate(config: ml_collections.ConfigDict, workdir: str, names=None
             ) -> dict[str, float]:
  """--mode=eval: runs the evaluators of config.evals (or those in `names`) on the newest
  checkpoint in the workdir."""
  if names:
    evaluators_lib.check_names(config, names)
  checkpoint_lib.require_checkpoints(workdir)   # before anything is built or created
  exp = build_experiment(config, workdir, "eval")
  try:
    restored = exp.checkpointer.restore_latest(exp.abstract_state)
    exp.checkpointer.close()
    if restored is None:
      raise CheckpointError(f"No readable checkpoint in {exp.checkpointer.directory} to "
                            "evaluate. Train first with --mode=train and the same "
                            "--workdir.")
    state, _, step = restored
    scheduled = evaluators_lib.build(exp, names or None)
    writer = writers.MetricWriter(exp.workdir)
    metrics = evaluators_lib.evaluate(scheduled, state, step, writer=writer)
    writer.write(step, "eval", metrics)
    writer.close()
  finally:
    exp.close()
  logging.info("eval of step %d: %s", step, json.dumps(metrics))
  return metrics
