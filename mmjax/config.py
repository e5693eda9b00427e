"""The config schema (`default_config`), loading of config files, and override checks.

Every config file builds on `default_config()`, so each section has a known set of keys:
an override of a key that does not exist is an error, not a silent no-op. `model` and
`objective` are free-form here because their keys depend on the chosen model/objective;
`build_model` and `make_objective` check those against the chosen class. So are the
options of the chosen adversarial method (`adversarial.beta` for TRADES, ...) and of each
evaluator (`evals.NAME.*`): the component checks them before any compute
(mmjax/train/checks.py runs every check). This module imports no component.
"""
from __future__ import annotations

import importlib.util
import inspect
import os
import re
import sys
from typing import Sequence

import ml_collections
from ml_collections import config_dict

from mmjax.errors import ConfigError

MODES = ("train", "eval", "explain", "quantize", "plan", "bench", "export")


def per_modality(default) -> config_dict.FieldReference:
  """A field holding one value or a {modality: value} dict (attack eps, norm, step size):
  untyped, so a config file may assign a dict and --config.KEY=VALUE either form."""
  return config_dict.FieldReference(default, field_type=object)


def default_config() -> ml_collections.ConfigDict:
  """All sections with their defaults; config files override what they need."""
  c = ml_collections.ConfigDict()
  c.data = dict(
      name="mmjax_digits",
      data_dir=config_dict.placeholder(str),
      train_split="train",
      eval_split="test",
      download=False,
      shuffle_buffer=10_000,
      preprocess_train="to_float|keep('image', 'label')",
      preprocess_eval="to_float|keep('image', 'label')",
      # Batched JAX ops run on the devices after the host pipeline, same spec syntax
      # (mmjax/data/device_ops.py): e.g. the audio front-end and its augmentation.
      device_preprocess_train=config_dict.placeholder(str),
      device_preprocess_eval=config_dict.placeholder(str),
      prefetch=2,
      # Train-split shards (0 = one per process); each process reads shards/processes of
      # them. The same value on 1 or N processes gives the same global batches.
      shards=0,
      # Packing of the training stream into full blocks of `length` tokens (0 = off):
      # each window of `documents` documents -> exactly `blocks` blocks, `eos_id` after
      # every document (-1 = none), from `key`/`key`_mask (mmjax/data/packing.py).
      pack=dict(length=0, documents=64, blocks=0, eos_id=-1, key="text"),
      # Read each split once and serve batches from host memory by numpy gathers (a full
      # reshuffle per epoch): for datasets that fit, the host CPU per batch is ~0. Needs
      # a deterministic host spec (random ops go to device_preprocess_train) and no
      # packing (mmjax/data/in_memory.py).
      in_memory=False,
  )
  c.model = ml_collections.ConfigDict({"name": "vit"})
  c.objective = ml_collections.ConfigDict({"name": "supervised"})
  # kind: none | madry | combined | trades | alum | freelb | free, or a registered plug-in
  # (mmjax/objectives/adversarial/; docs/robustness.md). The options every method shares
  # are here; a method's own (combined: lam, clean_weight; trades: beta; alum: lam,
  # consistency_on; free: replays) are set when that method is chosen and checked by it.
  # eps is unset: a method without an eps is an error, not a silent clean run.
  c.adversarial = dict(
      kind="none", modalities=("image",), attack="pgd", eps=per_modality(None),
      step_size=per_modality(None), steps=10, restarts=1, norm=per_modality("linf"),
      attack_loss="objective",
      # PGD returns its last iterate in training, as Madry et al. and TRADES do (one
      # forward pass cheaper); True keeps each example's highest-loss iterate.
      best_iterate=False,
      # Clip FGSM-RS / PGD's uniform random start into [0, 1] (Wong et al.'s CIFAR code,
      # Madry et al.) or leave it and clip only each step's result (Wong et al.'s MNIST
      # code; on MNIST's saturated pixels clipping turns FGSM-RS into nearly plain FGSM).
      clip_start=True,
      # Catastrophic-overfitting guard (Wong et al. 2020; mmjax/train/overfitting_guard.py):
      # every `guard_every` steps from `guard_start` on, PGD (`guard_steps`) and FGSM
      # accuracy on a held training batch; a fall of more than `guard_max_drop` below the
      # best check so far, at `guard_patience` checks in a row (1: Wong et al.), stops
      # training with the parameters of that best check; the final eval reports
      # guard/stopped=1.
      guard_every=0, guard_start=0, guard_steps=5,
      guard_step_size=config_dict.placeholder(float), guard_max_drop=0.2, guard_patience=1,
  )
  c.optim = dict(
      name="adamw", learning_rate=1e-3, schedule="cosine", warmup_steps=0,
      end_lr_factor=0.0, lr_boundaries=(), lr_decay=0.1, weight_decay=0.0,
      no_decay=("bias", "norm", "scale"),
      b1=0.9, b2=0.999, eps=1e-8, momentum=0.9, nesterov=False, clip_norm=0.0,
      grad_accum_steps=1, ema_decay=0.0,
  )
  # Fine-tuning (mmjax/train/finetune.py, docs/finetuning.md): `init_from` a Hugging Face
  # folder (config.json + safetensors) that fills the model at step 0; `mode` full |
  # linear_probe | lora | adapter picks what trains; `trainable` adds path regexes.
  # `adalora`: the rank allocation of model.adalora=True runs (mmjax/models/adalora.py,
  # docs/efficiency.md): the mean final rank per adapted matrix, t_i / t_f warmups,
  # steps between reallocations, the importance EMAs and the orthogonality weight γ.
  c.finetune = dict(init_from="", mode="full", trainable=(), adalora=dict(
      target_rank=4, init_warmup=0, final_warmup=0, mask_interval=10, beta1=0.85,
      beta2=0.85, orth_reg_weight=0.1))
  # eval_batch_size: the global batch of every evaluator that sets no batch_size.
  # checkpoint_every: 0 = no checkpoints on the way; the final one is written unless
  # final_checkpoint=False. allow_config_change: resume a workdir with a config that
  # differs in what defines the run (data, batch size, seed, model, objective,
  # adversarial, optim; mmjax/train/resume_check.py).
  c.train = dict(
      total_steps=100, batch_size=64, seed=0, log_every=10, eval_every=0,
      eval_batch_size=256, checkpoint_every=0, final_checkpoint=True, keep_checkpoints=3,
      async_checkpoints=True, device_prefetch=2, allow_config_change=False,
      # Where metrics go (mmjax/train/sinks.py, docs/tracking.md): 'tensorboard',
      # 'jsonl' (WORKDIR/metrics.jsonl, which plots, compare and resume read), 'wandb',
      # 'mlflow'. plots: PNG curves of metrics.jsonl in WORKDIR/plots/ at the end.
      loggers=("tensorboard", "jsonl"), plots=True,
  )
  # Options of the tracking sinks named in train.loggers (docs/tracking.md). Offline by
  # default: W&B writes WORKDIR/wandb/ for a later `wandb sync`; MLflow its file store
  # WORKDIR/mlruns/ unless tracking_uri is set. '' names: the workdir's basename.
  c.tracking = dict(
      wandb=dict(project="mmjax", entity="", name="", group="", tags=(), mode="offline"),
      mlflow=dict(tracking_uri="", experiment="mmjax", run_name=""),
  )
  # Differentially private training (mmjax/privacy/, docs/privacy.md): per-example
  # gradients clipped to `clip_norm` (each parameter tensor to clip_norm/sqrt(L) with
  # `per_layer`), Gaussian noise of std noise_multiplier * clip_norm once per batch.
  # noise_multiplier 0 with target_epsilon > 0: calibrated before training to reach
  # target_epsilon at `delta` after train.total_steps. sampling 'poisson' (what the
  # accountants assume; train.batch_size is the expected batch, padded to
  # physical_batch_size, 0 = chosen so overflow adds <= delta/100 over up to 1e6
  # steps) or 'shuffle'.
  # epsilon_budget (0: target_epsilon, if any) stops the run when spent. microbatch_size:
  # examples per vmapped chunk of per-example gradients (0: the whole batch at once).
  # audit_canaries: m mislabelled canaries, each trained on with probability 1/2, for
  # the `privacy_audit` evaluator's empirical lower bound on ε (also with privacy off).
  c.privacy = dict(
      enabled=False, clip_norm=1.0, noise_multiplier=0.0, target_epsilon=0.0, delta=1e-5,
      accountant="pld", sampling="poisson", physical_batch_size=0, epsilon_budget=0.0,
      per_layer=False, microbatch_size=0, audit_canaries=0,
  )
  # Device mesh and logical-axis rules (mmjax/parallel/rules.py, docs/scaling.md):
  # {'data': -1} is data parallelism; {'fsdp': -1} FSDP; {'model': N} tensor parallelism.
  c.mesh = dict(shape=ml_collections.ConfigDict({"data": -1, "fsdp": 1, "model": 1}),
                rules=config_dict.placeholder(tuple))
  # --mode=plan (mmjax/bench/plan.py): compile the train step for `devices` fake CPU
  # devices (0 = this machine's devices) or a TPU `topology` ('v5e:16x16', needs
  # jax[tpu]) and check the peak memory per device against `hbm_gib` (0 = not checked).
  c.plan = dict(devices=0, topology="", hbm_gib=0.0)
  # --mode=bench (mmjax/bench/throughput.py): `steps` timed train steps after `warmup`, on
  # synthetic data; `compare` adds 'bare' (a hand-written jax.jit step) and 'pipeline'
  # (the real input pipeline) in the same run. Each of `rounds` rounds runs every
  # contender for `steps` steps in turn, so a ratio compares neighbours in time.
  c.bench = dict(steps=20, warmup=3, rounds=3, compare=())
  # --mode=explain: attributions of the newest checkpoint, by the options of the
  # `attribution` evaluator (mmjax/evals/attribution_eval.py, docs/explainability.md);
  # files in WORKDIR/attributions_explain/.
  # int8 quantization (mmjax/quant/, docs/efficiency.md; the `quant` extra). `method`
  # int8_weight_only | int8_dynamic | int8_static, used by --mode=quantize (post-training,
  # on the newest checkpoint: accuracy f32 vs int8, parameter bytes, CPU latency, in
  # WORKDIR/quantization/) and by `qat` (train with that method's fake quantization and
  # straight-through gradients). calibration_batches: train batches that fix
  # int8_static's activation scales; calibration_statistic: how each input's per-example
  # ranges reduce to one ('mean' | 'max' | a percentile such as 'p99.9');
  # latency_batches: timed eval batches per model; keep_float: regexes of module paths
  # left in float32; qlora (with finetune.mode=lora): LoRA adapters and heads train in
  # float32 on the int8 weight-only base.
  c.quantization = dict(method="int8_dynamic", qat=False, qlora=False,
                        calibration_batches=8, calibration_statistic="mean",
                        latency_batches=20, keep_float=())
  c.explain = ml_collections.ConfigDict(dict(
      methods=("gradient", "smoothgrad", "integrated_gradients"), num_examples=32))
  # --mode=export (mmjax/interop/export.py, docs/deployment.md): the newest checkpoint as a
  # batch-polymorphic jax.export artifact and (saved_model) a TensorFlow SavedModel, in
  # `dir` ('' = WORKDIR/export), lowered for `platforms` (() = this machine's backend;
  # e.g. ('cpu', 'cuda') for both).
  c.export = dict(dir="", platforms=(), saved_model=True)
  # Named evaluators, each {type, every, <its options>} (mmjax/evals/, docs/evaluators.md):
  # e.g. c.evals.robust = dict(type='robust', attack='autoattack', eps=0.3). Each runs
  # every `every` steps (0: train.eval_every) and after the last step; its metrics are
  # named '<prefix><metric>' (prefix default '<name>/'; the eval loss's is '').
  c.evals = ml_collections.ConfigDict({"loss": {"type": "loss", "prefix": ""}})
  # Hyperparameter search (`python -m mmjax.sweep`, mmjax/sweep/, docs/sweeps.md); only
  # that command reads it, and empty `parameters` leave it off. `parameters`: a tuple of
  # (config key, distribution) pairs, e.g. sweep_space({"optim.learning_rate":
  # dict(type="log_uniform", low=1e-4, high=1e-1)}) (a dict with dotted keys cannot live
  # in a ConfigDict); `metric`: an eval metric name as in metrics.jsonl; sampler tpe |
  # random | grid; pruner median | hyperband | none; storage '' (WORKDIR/study.journal)
  # or an RDB URL; `enqueue`: parameter dicts tried first (e.g. the config's own values).
  c.sweep = dict(
      parameters=config_dict.FieldReference((), field_type=object), metric="",
      direction="maximize", num_trials=20, sampler="tpe", pruner="median",
      pruner_startup_trials=2, pruner_warmup_steps=0, storage="", study_name="mmjax",
      seed=0, enqueue=config_dict.FieldReference((), field_type=object), heartbeat_s=60,
      stale_after_s=600,
  )
  return c


def sweep_space(parameters: dict) -> tuple:
  """{config key: distribution dict} -> the tuple of pairs `config.sweep.parameters`
  holds (ConfigDicts refuse dotted keys when copied, tuples of pairs survive)."""
  return tuple((str(k), dict(v)) for k, v in parameters.items())


_CONFIG_FLAG = re.compile(r"^--config=(?P<path>[^:]+)(?::(?P<arg>.*))?$")
_OVERRIDE_FLAG = re.compile(r"^--config\.(?P<key>[A-Za-z0-9_.]+)(=.*)?$")


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """Imports a config file and calls its `get_config(arg)`."""
  if not os.path.isfile(path):
    raise ConfigError(f"Config file {path!r} does not exist. Pass --config=PATH to a "
                      "python file defining get_config(), e.g. configs/quickstart.py.")
  _put_config_package_on_path(path)
  spec = importlib.util.spec_from_file_location("mmjax_user_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"Config file {path!r} defines no get_config(arg=None).")
  if arg is not None and not inspect.signature(module.get_config).parameters:
    raise ConfigError(f"{path} has no variants: its get_config() takes no argument, got "
                      f":{arg}. Drop the ':{arg}' (variants are listed in a config file's "
                      "docstring).")
  try:
    return module.get_config(arg) if arg is not None else module.get_config()
  except (AttributeError, KeyError) as e:
    name = str(e).strip("\"'")
    if name in LEGACY_EVAL_SECTIONS or name in LEGACY_EVAL_SHARED:
      # e.g. `c.evals.robust.update(...)` in a config written for the old fixed sections.
      raise ConfigError(f"Config file {path!r} reads config.evals.{name}, which "
                        f"default_config() no longer has: "
                        f"{legacy_eval_key_error('evals.' + name)}") from None
    raise


def _put_config_package_on_path(path: str) -> None:
  """A config file inside a package (configs/papers/x.py, with __init__.py files up to
  configs/) may import its siblings as `configs.common`: the directory above the
  outermost package goes on sys.path, wherever the run was started from."""
  top = None
  directory = os.path.dirname(os.path.abspath(path))
  while os.path.isfile(os.path.join(directory, "__init__.py")):
    top, directory = directory, os.path.dirname(directory)
  if top is not None and directory not in sys.path:
    sys.path.insert(0, directory)


# Keys that existed once, with why they went and what to use instead.
REMOVED_KEYS = {
    "adversarial.guard_max_gap": (
        "the FGSM-PGD gap stopped healthy runs early in training (FGSM far above PGD is "
        "normal then). The guard now stops only on a fall below its best PGD accuracy "
        "(adversarial.guard_max_drop) and records the gap as a diagnostic."),
}


# config.evals was once fixed sections with off-switches (evals.robust.attack='' etc.)
# plus shared settings; now it holds named evaluators. What the old keys became:
LEGACY_EVAL_SHARED = {
    "batch_size": "write train.eval_batch_size (every evaluator's default) or "
                  "evals.NAME.batch_size (one evaluator's).",
    "max_batches": "write evals.loss.max_batches (the eval loss's option).",
    "use_ema": "write evals.NAME.use_ema (one evaluator's option; default True).",
}
LEGACY_EVAL_SECTIONS = ("robust", "retrieval", "zero_shot", "probe", "report", "caption")


def legacy_eval_key_error(key: str) -> ConfigError:
  """The ConfigError for an old-style evals key (`evals.batch_size`, `evals.robust.eps`
  on a config without an evaluator named robust), with its new spelling."""
  parts = key.split(".")
  if len(parts) == 2 and parts[1] in LEGACY_EVAL_SHARED:
    return ConfigError(f"{key} is no longer a shared setting: config.evals holds only "
                       f"named evaluators {{type, every, ...}}; "
                       f"{LEGACY_EVAL_SHARED[parts[1]]} See docs/evaluators.md.")
  name = parts[1]
  example = name if name in LEGACY_EVAL_SECTIONS else "robust"
  return ConfigError(
      f"{key}: this config has no evaluator named {name!r}. Evaluators are named entries "
      f"now: c.evals.{name} = dict(type={example!r}, ...) in a config file, or "
      f"--config.evals.{name}.type={example} followed by its options "
      f"(--config.evals.{name}.OPTION=VALUE) on the command line; an evaluator runs when "
      "it is listed (the old off-switches such as evals.robust.attack='' are gone). See "
      "docs/evaluators.md.")


def check_removed(keys) -> None:
  """ConfigError for a key that was removed, saying why and what replaces it."""
  for key in keys:
    if key in REMOVED_KEYS:
      raise ConfigError(f"{key} was removed: {REMOVED_KEYS[key]}")


def new_evaluators(argv: Sequence[str], config: ml_collections.ConfigDict
                   ) -> dict[str, str]:
  """{name: type} of the evaluators that --config.evals.NAME.type=TYPE flags add (NAME
  not in the config file)."""
  added = {}
  for arg in argv:
    m = re.match(r"^--config\.evals\.([A-Za-z0-9_]+)\.type=(.*)$", arg)
    if m and m[1] not in config.evals:
      added[m[1]] = m[2].strip("'\"")
  return added


def add_new_evaluators(config: ml_collections.ConfigDict, argv: Sequence[str]) -> None:
  """Adds an entry {type: TYPE} to config.evals for each evaluator that flags add, so
  that its other --config.evals.NAME.KEY flags have somewhere to go."""
  for name, type_name in new_evaluators(argv, config).items():
    config.evals[name] = ml_collections.ConfigDict({"type": type_name})


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number"}


def _check_override_value(config: ml_collections.ConfigDict, key: str, arg: str) -> None:
  """ConfigError for --config.KEY=VALUE whose VALUE cannot be the type of the existing
  field KEY (bool, int, float), instead of absl's raw flag-parsing failure."""
  if "=" not in arg:
    return
  value = arg.split("=", 1)[1]
  node = config
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return   # a new or free-form key: its owner checks it
    node = node[part]
  kind = type(node)
  if kind not in _TYPE_WORDS:
    return
  try:
    if kind is bool:
      ok = value.lower() in ("true", "false", "1", "0")
    else:
      kind(value)
      ok = True
  except ValueError:
    ok = False
  if not ok:
    raise ConfigError(f"--config.{key}={value}: {key} is {_TYPE_WORDS[kind]} (now "
                      f"{node!r}), and {value!r} is not. E.g. --config.{key}={node}.")


def check_override_keys(argv: Sequence[str], model_fields=None) -> None:
  """Raises a ConfigError for any --config.KEY=VALUE whose KEY the config lacks.

  ml_collections' flag parser reports an unknown key as a bare AttributeError traceback;
  checking first gives one clear sentence instead, before anything runs. A field of the
  model class that the config file leaves at its default (e.g. `model.attention`,
  `model.lora_rank`) is a valid key too: `mmjax.main` lets such overrides add it. So is
  any `adversarial.KEY`: a method's own options (e.g. `adversarial.beta`) depend on the
  chosen method, which checks them (naming a misspelt one) when `make_adversarial` builds
  it, before any compute; config.py imports no component to know them. `model_fields`
  (config.model -> the names its model class takes; mmjax.main passes it) checks
  `model.KEY`; without it any model key passes here and the model checks it when built.
  """
  config = None
  for arg in argv:
    m = _CONFIG_FLAG.match(arg)
    if m:
      config = load_config_file(m["path"], m["arg"])
  if config is None:
    return
  fields = None
  added = new_evaluators(argv, config)
  for arg in argv:
    m = _OVERRIDE_FLAG.match(arg)
    if not m:
      continue
    check_removed([m["key"]])
    _check_override_value(config, m["key"], arg)
    parts = m["key"].split(".")
    if parts[0] == "evals" and len(parts) > 1:
      if len(parts) == 2 and parts[1] in LEGACY_EVAL_SHARED:
        raise legacy_eval_key_error(m["key"])
      if parts[1] in config.evals or parts[1] in added:
        continue   # an evaluator's option: the evaluator checks it, before any compute
      raise legacy_eval_key_error(m["key"])
    node, walked = config, []
    for part in m["key"].split("."):
      if isinstance(node, ml_collections.ConfigDict) and part in node:
        node, walked = node[part], walked + [part]
        continue
      keys = set(node.keys()) if isinstance(node, ml_collections.ConfigDict) else set()
      if walked == ["adversarial"] and m["key"] == f"adversarial.{part}":
        break   # a method's own option (a value: nothing below it), checked by the method
      if walked == ["explain"] and m["key"] == f"explain.{part}":
        break   # an attribution evaluator option, checked by the evaluator
      if walked == ["model"] and model_fields is None:
        break
      if walked == ["model"]:
        fields = model_fields(config.model) if fields is None else fields
        if part in fields:
          if m["key"] == f"model.{part}":
            break   # a model field at its class default
          node, walked = None, walked + [part]   # a value: nothing below it
          continue
        keys |= fields
      where = ".".join(walked) or "the config"
      raise ConfigError(
          f"Unknown config key {m['key']!r} in {arg.split('=')[0]}: {where} has no key "
          f"{part!r}. Valid keys there: {', '.join(sorted(keys))}.")
