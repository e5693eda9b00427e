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
from mmjax.models import adalora
from mmjax.data import device_ops   # JAX only; TensorFlow enters with mmjax.data's iterators
from mmjax.errors import CheckpointError, ConfigError, MmjaxError
from mmjax.evals import batched, evaluators as evaluators_lib
from mmjax.objectives import adversarial
from mmjax.train import checkpoint as checkpoint_lib
from mmjax.train import checks, finetune, hooks as hooks_lib, optim, resume_check
from mmjax.privacy import hook as privacy_hook  # noqa: F401  (registers its hook)
from mmjax.quant import qat
from mmjax.train import adalora_hook, overfitting_guard, plot_hook, preemption  # noqa: F401
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
  privacy: Any = None   # mmjax.privacy.plan.PrivacyPlan of a DP run, else None
  adalora: Any = None   # mmjax.models.adalora.Settings of an AdaLoRA run, else None

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
  def batch_size(self) -> int:
    """The global batch every step holds: train.batch_size, or under DP Poisson
    sampling the padded size of a batch whose expected size is train.batch_size."""
    if self.privacy is not None:
      return self.privacy.physical_batch_size
    return self.config.train.batch_size

  @property
  def per_process_batch(self) -> int:
    return self.batch_size // jax.process_count()

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
  batch_shards = parallel.batch_shards(mesh, parallel.batch_axes(rules))
  checks.check_config(config, mode, batch_shards=batch_shards)
  model = qat.training_model(config.quantization, models.build_model(config.model))
  adalora_settings = adalora.settings_from_config(config)   # refuses bad budgets here
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
  num_train = None
  if element is None:
    from mmjax import data  # TensorFlow enters here, and only for the input pipeline
    # Unknown or unprepared dataset: fails here, clearly, before any compute.
    info = data.dataset_info(config.data)
    element, num_train = info["train_element"], info["train_examples"]
  privacy = _privacy_plan(config, num_train, batch_shards)
  batch_size = privacy.physical_batch_size if privacy else config.train.batch_size
  example = _zeros_batch(element, batch_size // jax.process_count())
  init_batch = jax.tree.map(lambda x: x[:1], example)
  if privacy and privacy.sampling == "poisson":
    example["mask"] = np.ones((batch_size // jax.process_count(),), np.float32)
  ema = config.optim.ema_decay > 0
  # A QAT/QLoRA model that quantizes no weight fails here, not silently in float32.
  abstract_variables = qat.check_quantizes(
      model, lambda: models.abstract_variables(model, init_batch))
  if privacy:
    from mmjax.privacy import plan as privacy_plan
    privacy_plan.check_loss_and_model(loss_fn, list(abstract_variables))
  tx = finetune.freeze_optimizer(tx, config.finetune, abstract_variables["params"])
  if adalora_settings is not None:   # the trainer owns the rank allocation
    tx = adalora.rank_allocator(tx, adalora_settings)

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
                   metric_shapes=metric_shapes, created_workdir=created, privacy=privacy,
                   adalora=adalora_settings)
  try:
    parallel.check_process_batches(mesh, exp.batch_sharding, exp.batch_size)
  except Exception:
    exp.close()
    raise
  return exp


def _privacy_plan(config: ml_collections.ConfigDict, num_train: int | None,
                  batch_shards: int):
  """The run's PrivacyPlan, or None when privacy is off. Without the dataset's size
  (plan and bench modes read none) the batches are the configured ones: the step, and
  so its cost, is the same."""
  if not config.privacy.enabled:
    return None
  from mmjax.privacy import audit, plan as privacy_plan
  if num_train is None:
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.privacy.sampling = "shuffle"
      config.privacy.target_epsilon = 0.0
      config.privacy.noise_multiplier = config.privacy.noise_multiplier or 1.0
    num_train = config.train.batch_size
  elif config.privacy.audit_canaries:   # the audit's out-canaries leave the train set
    num_train -= int((~audit.included_flags(config.train.seed,
                                             config.privacy.audit_canaries)).sum())
  return privacy_plan.resolve(config, num_train, batch_shards)


def _canaries(config: ml_collections.ConfigDict):
  """arrays -> arrays planting privacy.audit_canaries canaries (mmjax/privacy/audit.py),
  or None without an audit."""
  if not config.privacy.audit_canaries:
    return None
  from mmjax.privacy import audit
  return lambda arrays: audit.choose(
      arrays["label"], config.privacy.audit_canaries, config.model.get("num_classes", 0),
      config.train.seed).apply(arrays)


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
  if exp.privacy is not None:   # the DP step's own metrics (mmjax/train/step.py)
    shapes.update({k: jax.ShapeDtypeStruct((), jnp.float32)
                   for k in ("dp/clipped_fraction", "dp/batch_size")})
  shapes.update({k: jax.ShapeDtypeStruct((), jnp.float32) for k in
                 adalora.penalty_names(exp.adalora)})
  replicated = parallel.replicated(exp.mesh)
  return lambda: jax.device_put(step_lib.init_metric_accumulator(shapes), replicated)


def train_step_fn(exp: Experiment):
  """The experiment's train step, not yet jitted: (state, batch, acc) -> (state, acc)."""
  config = exp.config
  return step_lib.make_train_step(exp.loss_fn, exp.tx,
                                  grad_accum_steps=config.optim.grad_accum_steps,
                                  ema_decay=config.optim.ema_decay,
                                  trainable=finetune.trainable_fn(config.finetune),
                                  privacy=exp.privacy and exp.privacy.dp_settings(),
                                  regularizer=adalora.regularizer(exp.adalora))


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
               f"{n_params:,}", jax.device_count(), exp.batch_size)
  finetune.log_trainable(state.params, config.finetune)

  from mmjax import data
  hooks = hooks_lib.build_hooks(exp)   # evaluators read their examples here
  poisson = exp.privacy is not None and exp.privacy.sampling == "poisson"
  batches = data.make_train_iterator(
      config.data, batch_size=exp.per_process_batch, seed=t.seed, start_batch=consumed,
      poisson_rate=exp.privacy.sampling_rate if poisson else 0.0,
      held_transform=_canaries(config))
  device_batches = parallel.prefetch_to_mesh(
      batches, exp.mesh, t.device_prefetch, exp.batch_sharding,
      transform=device_ops.train_transform(config.data, seed=t.seed, start_batch=consumed,
                                           sharding=exp.batch_sharding))
  train_step, _ = compile_steps(exp)
  new_acc = accumulator_factory(exp)
  # Rows a killed run wrote after the step this run resumes from are dropped, so the
  # metrics keep one row per step and split.
  run = hooks_lib.Run(exp=exp, state=state, acc=new_acc(), new_acc=new_acc,
                      writer=writers.MetricWriter(exp.workdir, resume_step=start,
                                                  config=config),
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


def quantize(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """--mode=quantize: the `quantization` evaluator with config.quantization's method,
  alone, on the newest checkpoint (metrics 'quantization/...', files in
  WORKDIR/quantization/)."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.evals.quantization = ml_collections.ConfigDict(dict(type="quantization"))
  return evaluate(config, workdir, ["quantization"])


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
    writer = writers.MetricWriter(exp.workdir, config=config)
    try:
      metrics = evaluators_lib.evaluate(scheduled, state, step, writer=writer)
      if exp.privacy is not None:   # the privacy the checkpoint's training spent
        ledger = privacy_hook.ledger_from(exp.checkpointer.restored_data)
        metrics.update({"privacy/epsilon": exp.privacy.epsilon(ledger),
                        "privacy/delta": exp.privacy.delta})
      writer.write(step, "eval", metrics)
    finally:
      writer.close()
    if config.train.plots and jax.process_index() == 0:
      plot_hook.plot(exp.workdir)
  finally:
    exp.close()
  logging.info("eval of step %d: %s", step, json.dumps(metrics))
  return metrics
