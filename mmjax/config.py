"""Config defaults, loading, override checking and validation.

Every config file builds on `default_config()`, so each section has a known set of keys:
an override of a key that does not exist is an error, not a silent no-op. `model` and
`objective` are free-form here because their keys depend on the chosen model/objective;
`build_model` and `make_objective` check those against the chosen class. So are the
options of the chosen adversarial method (`adversarial.beta` for TRADES, ...): the method
checks them when `make_adversarial` builds it, before any compute.
"""
from __future__ import annotations

import importlib.util
import os
import re
from typing import Sequence

import jax
import ml_collections
from ml_collections import config_dict

from mmjax.errors import ConfigError, MmjaxError

MODES = ("train", "eval", "plan", "bench")


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
      # Catastrophic-overfitting guard (Wong et al. 2020; mmjax/train/robust_eval.py):
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
  c.finetune = dict(init_from="", mode="full", trainable=())
  c.train = dict(
      total_steps=100, batch_size=64, seed=0, log_every=10, eval_every=0,
      checkpoint_every=0, keep_checkpoints=3, async_checkpoints=True,
      device_prefetch=2,
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
  c.evals = dict(batch_size=256, max_batches=0, use_ema=True)
  # Robust accuracy with each eval when `attack` is set (mmjax/train/robust_eval.py):
  # the first `num_examples` eval examples, the sanity suite's verdicts in the metrics,
  # and an accuracy-vs-eps curve over `curve_eps` (JSON + PNG in the workdir).
  # attack: fgsm | pgd | apgd-ce | apgd-dlr | apgd-t | fab | fab-t | square | ensemble |
  # autoattack (its `version`: standard | plus | rand | custom with `attacks`, e.g.
  # ('apgd-ce', 'square'); AutoAttack sets its own steps and restarts). step_size is for
  # fgsm and pgd only: the others set their own and refuse one. `per_modality` also
  # attacks each of several `modalities` alone (the joint attack is 'robust/accuracy').
  c.evals.robust = dict(
      attack="", eps=per_modality(0.0), norm=per_modality("linf"), steps=10,
      step_size=per_modality(None),
      restarts=1, modalities=("image",), num_examples=500, sanity=True, curve_eps=(),
      version="standard", attacks=(), per_modality=False,
  )
  # Representation evals of the multimodal model (mmjax/train/representation_eval.py).
  # Cross-modal recall@K between `pairs` of modalities (e.g. (('image', 'text'),)),
  # class-level when `by_label`.
  c.evals.retrieval = dict(pairs=(), ks=(1, 5, 10), num_examples=500, by_label=True)
  # CLIP-style zero-shot classification of `num_examples` eval images by prompts:
  # `templates` filled with `class_names` (in label order; () = off), tokenized by the
  # `tokenize` spec from the key 'prompt'.
  c.evals.zero_shot = dict(class_names=(), templates=("a photo of a {}.",), tokenize="",
                           num_examples=500)
  # A linear probe on `modality`'s frozen pooled features ('' = off; a single-modality
  # model's 'pooled'): trained on the first `train_examples` of the train split, tested
  # on `test_examples` eval examples; robust accuracy through encoder + probe when
  # `attack` is set (step `attack_step_size`; 0 = the attack's default, 2.5 eps / steps);
  # the same probe on a randomly initialised encoder when `random_baseline`.
  c.evals.probe = dict(modality="", train_examples=2000, test_examples=500, steps=500,
                       learning_rate=0.05, l2=1e-4, attack="", eps=0.0, norm="linf",
                       attack_steps=10, attack_step_size=0.0, random_baseline=True)
  # Captions decoded from model.caption_source for the first `num_examples` eval
  # examples (0 = off), greedy (beam_size 1) or beam search, BLEU against `text_key`.
  # A report per eval (mmjax/train/report_eval.py): kind '' (off) | 'classification' |
  # 'tokens' (entity F1 of BIO tags under `label_key`) | 'perplexity'; `class_names` name
  # the classes or tags; the first `num_examples` eval examples (0 = all).
  c.evals.report = dict(kind="", class_names=(), num_examples=0, label_key="token_labels")
  c.evals.caption = dict(num_examples=0, beam_size=1, length_penalty=0.6, text_key="text",
                         tokenizer="bytes", sp_model="")
  return c


_CONFIG_FLAG = re.compile(r"^--config=(?P<path>[^:]+)(?::(?P<arg>.*))?$")
_OVERRIDE_FLAG = re.compile(r"^--config\.(?P<key>[A-Za-z0-9_.]+)(=.*)?$")


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """Imports a config file and calls its `get_config(arg)`."""
  if not os.path.isfile(path):
    raise ConfigError(f"Config file {path!r} does not exist. Pass --config=PATH to a "
                      "python file defining get_config(), e.g. configs/quickstart.py.")
  spec = importlib.util.spec_from_file_location("mmjax_user_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"Config file {path!r} defines no get_config(arg=None).")
  return module.get_config(arg) if arg is not None else module.get_config()


def model_fields(model_config: ml_collections.ConfigDict) -> set[str]:
  """The fields of config.model's model class (every key the model takes), or none when
  the name is unknown (that error comes later, with its own message)."""
  from mmjax.models import config_with_defaults  # pylint: disable=g-import-not-at-top
  try:
    return set(config_with_defaults(model_config))
  except (MmjaxError, KeyError):
    return set()


# Keys that existed once, with why they went and what to use instead.
REMOVED_KEYS = {
    "adversarial.guard_max_gap": (
        "the FGSM-PGD gap stopped healthy runs early in training (FGSM far above PGD is "
        "normal then). The guard now stops only on a fall below its best PGD accuracy "
        "(adversarial.guard_max_drop) and records the gap as a diagnostic."),
}


def check_removed(keys) -> None:
  """ConfigError for a key that was removed, saying why and what replaces it."""
  for key in keys:
    if key in REMOVED_KEYS:
      raise ConfigError(f"{key} was removed: {REMOVED_KEYS[key]}")


def check_override_keys(argv: Sequence[str]) -> None:
  """Raises a ConfigError for any --config.KEY=VALUE whose KEY the config lacks.

  ml_collections' flag parser reports an unknown key as a bare AttributeError traceback;
  checking first gives one clear sentence instead, before anything runs. A field of the
  model class that the config file leaves at its default (e.g. `model.attention`,
  `model.lora_rank`) is a valid key too: `mmjax.main` lets such overrides add it. So is
  any `adversarial.KEY`: a method's own options (e.g. `adversarial.beta`) depend on the
  chosen method, which checks them (naming a misspelt one) when `make_adversarial` builds
  it, before any compute; config.py imports no component to know them.
  """
  config = None
  for arg in argv:
    m = _CONFIG_FLAG.match(arg)
    if m:
      config = load_config_file(m["path"], m["arg"])
  if config is None:
    return
  fields = None
  for arg in argv:
    m = _OVERRIDE_FLAG.match(arg)
    if not m:
      continue
    check_removed([m["key"]])
    node, walked = config, []
    for part in m["key"].split("."):
      if isinstance(node, ml_collections.ConfigDict) and part in node:
        node, walked = node[part], walked + [part]
        continue
      keys = set(node.keys()) if isinstance(node, ml_collections.ConfigDict) else set()
      if walked == ["adversarial"] and m["key"] == f"adversarial.{part}":
        break   # a method's own option (a value: nothing below it), checked by the method
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


def validate(config: ml_collections.ConfigDict, mode: str = "train",
             batch_shards: int | None = None) -> None:
  """Checks values and combinations that would otherwise fail after compute is spent.

  `batch_shards`: how many ways the mesh splits the batch (default: every device).
  """
  if mode not in MODES:
    raise ConfigError(f"Unknown --mode={mode!r}. Choose one of: {', '.join(MODES)}.")
  check_removed(key for key in REMOVED_KEYS
                if key.split(".")[-1] in config.get(key.split(".")[0], {}))
  t = config.train
  for key in ("total_steps", "batch_size", "log_every", "eval_every", "checkpoint_every",
              "keep_checkpoints", "seed"):
    if not isinstance(t[key], int) or isinstance(t[key], bool):
      raise ConfigError(f"train.{key} must be an integer, got {t[key]!r}.")
    if t[key] < 0 or (key in ("total_steps", "batch_size") and t[key] == 0):
      raise ConfigError(f"train.{key} must be positive, got {t[key]}.")
  n_proc = jax.process_count()
  n_dev = batch_shards or jax.device_count()
  devices = "devices" if batch_shards is None else "devices the mesh splits the batch over"
  if t.batch_size % n_dev:
    raise ConfigError(
        f"train.batch_size={t.batch_size} is not divisible by the {n_dev} {devices}; "
        f"use a multiple of {n_dev}, e.g. --config.train.batch_size="
        f"{max(n_dev, t.batch_size // n_dev * n_dev)}.")
  accum = config.optim.grad_accum_steps
  if accum < 1 or (t.batch_size // n_proc) % accum or (t.batch_size // accum) % n_dev:
    raise ConfigError(
        f"optim.grad_accum_steps={accum} must be >= 1 and split train.batch_size="
        f"{t.batch_size} into equal micro-batches divisible by the {n_dev} {devices}.")
  if config.evals.batch_size % n_dev:
    raise ConfigError(f"evals.batch_size={config.evals.batch_size} is not divisible by the "
                      f"{n_dev} {devices}; use a multiple of {n_dev}.")
  if not 0.0 <= config.optim.ema_decay < 1.0:
    raise ConfigError(f"optim.ema_decay={config.optim.ema_decay} must be in [0, 1).")
  # The adversarial method checks its own options when built (make_adversarial); the
  # overfitting guard is the trainer's.
  adv = config.adversarial
  if adv.guard_every and adv.kind == "none":
    raise ConfigError("adversarial.guard_every is set but adversarial.kind is 'none': the "
                      "catastrophic-overfitting guard watches adversarial training.")
  if adv.guard_every and (not isinstance(adv.eps, (int, float)) or not 0 < adv.guard_max_drop
                          <= 1 or adv.guard_start < 0 or adv.guard_patience < 1):
    raise ConfigError("adversarial.guard_every needs a scalar adversarial.eps, "
                      "guard_max_drop in (0, 1], guard_start >= 0 and guard_patience >= 1, "
                      f"got eps={adv.eps!r}, guard_patience={adv.guard_patience!r}, "
                      f"guard_max_drop={adv.guard_max_drop!r}, "
                      f"guard_start={adv.guard_start!r}.")
  from mmjax.data import device_ops, in_memory   # no TF: names, arguments, random ops
  for split in ("train", "eval"):
    device_ops.device_fn(config.data, split)
  in_memory.check_config(config.data)
  if config.evals.report.kind:
    from mmjax.train import report_eval   # no TF
    report_eval.check_config(config.evals.report)
  rob = config.evals.robust
  if rob.attack:
    from mmjax.evals import robustness   # no TF, no model: cheap
    if rob.attack not in robustness.EVAL_ATTACKS:
      raise ConfigError(f"Unknown evals.robust.attack={rob.attack!r}. Choose one of: "
                        f"{', '.join(robustness.EVAL_ATTACKS)} (or '' for none).")
    if not hasattr(rob.eps, "items") and rob.eps <= 0:
      raise ConfigError("evals.robust.attack is set but evals.robust.eps is not positive; "
                        "e.g. --config.evals.robust.eps=0.3.")
    if rob.curve_eps and hasattr(rob.eps, "items"):
      raise ConfigError("evals.robust.curve_eps needs a scalar evals.robust.eps (a curve "
                        "over one eps for every modality); unset curve_eps or eps's dict.")
    if rob.num_examples < 1:
      raise ConfigError(f"evals.robust.num_examples={rob.num_examples} must be positive.")
    step = rob.step_size.to_dict() if hasattr(rob.step_size, "to_dict") else rob.step_size
    robustness.check_step_size(rob.attack, step, "evals.robust.step_size")
    if rob.attack == "autoattack":
      from mmjax.evals import autoattack
      autoattack.version_stages(rob.version, tuple(rob.attacks))
    elif rob.attacks:
      raise ConfigError("evals.robust.attacks lists AutoAttack members, read only with "
                        "evals.robust.attack='autoattack' and version='custom'.")


# ---- helpers for config files (configs/papers/*) ----
def config_variant(arg: str | None, path: str, variants: Sequence[str] = ("full", "tiny")
                   ) -> str:
  """The `:ARG` of --config=PATH:ARG, checked against `variants` (default: the first)."""
  variant = arg or variants[0]
  if variant not in variants:
    raise ConfigError(f"{path} takes {' or '.join(':' + v for v in variants)}, got "
                      f":{arg}.")
  return variant


def shrink_to_local(c: ml_collections.ConfigDict, *, total_steps: int = 300,
                    batch_size: int = 64) -> None:
  """A scale-out config's `:tiny` run on this machine: a short run, FSDP over the local
  devices, 2 eval batches, and plans for 8 fake devices against 1 GiB."""
  c.train.update(dict(total_steps=total_steps, batch_size=batch_size, log_every=50,
                      eval_every=total_steps // 2, checkpoint_every=total_steps // 2))
  c.mesh.shape = {"fsdp": -1}
  c.plan.update(dict(devices=8, hbm_gib=1.0))
  c.evals.update(dict(batch_size=256, max_batches=2))


def smoke_run(c: ml_collections.ConfigDict, *, total_steps: int = 4, batch_size: int = 8,
              eval_batch: int = 64) -> None:
  """A `:tiny` variant's run: a few steps (warmup 1), one eval batch, a report over that
  batch; checks that a config works end to end, not what it reaches."""
  c.optim.warmup_steps = min(c.optim.warmup_steps, 1)
  c.train.update(dict(total_steps=total_steps, batch_size=batch_size,
                      log_every=max(total_steps // 2, 1), eval_every=total_steps,
                      checkpoint_every=total_steps))
  c.evals.update(dict(batch_size=eval_batch, max_batches=1))
  c.evals.report.num_examples = eval_batch


def bench_variant(c: ml_collections.ConfigDict, variant: str, *, cpu_batch: int,
                  gpu_batch: int, tiny_model: dict, gpu_model: dict | None = None) -> None:
  """The shared shape of configs/bench/*: synthetic data (no dataset), and per variant the
  batch, the model changes and the number of timed steps. 'cpu': `cpu_batch`, float32;
  'gpu': `gpu_batch`, bfloat16 compute, scanned layers (+ `gpu_model`); 'tiny':
  `tiny_model`, a smoke test."""
  c.data.name = "benchmark_has_no_dataset"   # shapes come from the model
  c.train.update(dict(batch_size=cpu_batch, total_steps=10))
  c.bench.update(dict(steps=5, warmup=2))
  if variant == "gpu":
    c.model.update(dict(scan_layers=True, dtype="bfloat16", **(gpu_model or {})))
    c.train.batch_size = gpu_batch
    c.bench.update(dict(steps=20, warmup=3))
  elif variant == "tiny":
    c.model.update(tiny_model)
    c.bench.update(dict(steps=2, warmup=1))


def use_embedded_digits(c: ml_collections.ConfigDict, *, image_size: int = 28,
                        rgb: bool = False, augment: str = "") -> None:
  """Points `c.data` at the embedded `mmjax_digits` (prepared offline on first use).

  image_size / rgb resize and replicate the channel so that a CIFAR-shaped model
  ([32, 32, 3]) runs unchanged; `augment` is inserted before `keep` in training only.
  """
  ops = ["to_float"]
  if image_size != 28:
    ops.append(f"resize({image_size})")
  if rgb:
    ops.append("grayscale_to_rgb")
  keep = "keep('image', 'label')"
  c.data.name = "mmjax_digits"
  c.data.train_split, c.data.eval_split = "train", "test"
  c.data.preprocess_train = "|".join(ops + ([augment] if augment else []) + [keep])
  c.data.preprocess_eval = "|".join(ops + [keep])
  c.data.shuffle_buffer = 4000


def use_cifar10(c: ml_collections.ConfigDict) -> None:
  """TFDS `cifar10` with the standard augmentation (random crop with 4-pixel padding,
  horizontal flip) for training and none for eval; pixels stay in [0, 1]."""
  c.data.name = "cifar10"
  c.data.train_split, c.data.eval_split = "train", "test"
  c.data.preprocess_train = ("to_float|random_crop(32, pad=4)|flip_lr|"
                             "keep('image', 'label')")
  c.data.preprocess_eval = "to_float|keep('image', 'label')"
  c.data.shuffle_buffer = 50_000


def use_imagenet(c: ml_collections.ConfigDict, *, area_min: float = 0.08) -> None:
  """TFDS `imagenet2012` (a manual download) at 224 px: inception crop (`area_min` to 100%
  of the area) + horizontal flip for training; shorter side 256 and a centre crop for
  eval; pixels in [0, 1]."""
  c.data.update(dict(
      name="imagenet2012", train_split="train", eval_split="validation",
      shuffle_buffer=250_000,
      preprocess_train=(f"inception_crop(224, area_min={area_min})|flip_lr|to_float|"
                        "keep('image', 'label')"),
      preprocess_eval="resize_small(256)|center_crop(224)|to_float|keep('image', 'label')"))


def use_multimodal_digits(c: ml_collections.ConfigDict, *, max_len: int = 32,
                          audio: bool = True) -> None:
  """`mmjax_digits` as image + caption + DTMF audio: images randomly cropped (pad 2),
  captions byte-tokenized to `max_len` ('text', 'text_mask'), audio with random gain,
  noise and SpecAugment before a 64 x 28 log-mel 'spectrogram'; eval without
  augmentation. The host decodes and tokenizes; pixels and audio are processed batched
  on the devices (the data.device_preprocess_* specs, mmjax/data/device_ops.py). Batches
  keep image, text, text_mask, spectrogram and label; `audio=False` leaves the audio out
  (no CPU spent on a modality a model lacks)."""
  keys = ("image", "text", "text_mask") + (("audio",) if audio else ()) + ("label",)
  c.data.preprocess_train = c.data.preprocess_eval = (
      f"tokenize('caption', 'text', max_len={max_len})|keep{keys!r}")
  # Per example on the host, these ops cost 19 ms of CPU per batch of 64, time the
  # step lost on a 2-core machine; batched on the devices, 3 ms (docs/benchmarks.md).
  c.data.device_preprocess_train = "to_float|random_crop(28, pad=2)"
  c.data.device_preprocess_eval = "to_float"
  if audio:
    c.data.device_preprocess_train += (
        "|audio_gain|audio_noise(max_std=0.02)|log_mel|"
        "spec_augment(freq_masks=1, freq_width=8, time_masks=1, time_width=4)|drop('audio')")
    c.data.device_preprocess_eval += "|log_mel|drop('audio')"
  c.data.name = "mmjax_digits"
  c.data.shuffle_buffer = 4000
  # The host's part is deterministic, so the 4,000 decoded and tokenized examples (20 MiB)
  # are read once and each batch is a gather: ~0 host CPU per step.
  c.data.in_memory = True


def image_text_digits_tiny(c: ml_collections.ConfigDict, *, max_len: int = 32) -> None:
  """The `:tiny` run of an image-text contrastive paper config (CLIP, SigLIP): image +
  caption of the embedded digits, the config's two-tower model at 2 layers of width 64
  (7 x 7 patches, float32), lr 3e-3 with 30 warmup steps, 1,200 steps of 64, and
  class-level image<->caption recall@K and zero-shot accuracy on 500 test digits."""
  use_multimodal_digits(c, max_len=max_len, audio=False)
  c.data.train_split, c.data.eval_split = "train", "test"
  c.model.update(dict(width=64, depth=2, num_heads=4, mlp_dim=128, image_size=28,
                      patch_size=7, channels=1, max_len=max_len, projection_dim=32,
                      dtype="float32"))
  c.optim.update(dict(learning_rate=3e-3, warmup_steps=30))
  c.train.update(dict(total_steps=1200, batch_size=64, log_every=100, eval_every=600,
                      checkpoint_every=600))
  c.evals.update(dict(batch_size=250, max_batches=2))
  c.evals.retrieval.update(dict(num_examples=500, by_label=True))
  # Zero-shot classification by prompts naming each digit (CLIP's published metric, at
  # digit scale).
  c.evals.zero_shot.update(dict(
      class_names=("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                   "nine"),
      templates=("a handwritten {}", "the digit {}"),
      tokenize=f"tokenize('prompt', 'text', max_len={max_len})", num_examples=500))
