"""What config files share: dataset recipes, variants and run sizes.

Config files import it as `from configs.common import ...`: `mmjax.config.
load_config_file` puts the directory above `configs/` on sys.path, wherever the run
starts from.
"""
from __future__ import annotations

from typing import Sequence

import ml_collections

from mmjax.errors import ConfigError


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
  c.train.eval_batch_size = 256
  c.evals.loss.max_batches = 2


def smoke_run(c: ml_collections.ConfigDict, *, total_steps: int = 4, batch_size: int = 8,
              eval_batch: int = 64) -> None:
  """A `:tiny` variant's run: a few steps (warmup 1), one eval batch, a report over that
  batch; checks that a config works end to end, not what it reaches."""
  c.optim.warmup_steps = min(c.optim.warmup_steps, 1)
  c.train.update(dict(total_steps=total_steps, batch_size=batch_size,
                      log_every=max(total_steps // 2, 1), eval_every=total_steps,
                      checkpoint_every=total_steps))
  c.train.eval_batch_size = eval_batch
  c.evals.loss.max_batches = 1
  for entry in c.evals.values():
    if entry.type == "report":
      entry.num_examples = eval_batch


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
  # Per example on the host these ops take CPU time the step loses on a small machine;
  # batched on the devices they are a fraction of it (docs/benchmarks.md).
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
  c.train.eval_batch_size = 250
  c.evals.loss.max_batches = 2
  c.evals.retrieval.update(dict(num_examples=500, by_label=True))
  # Zero-shot classification by prompts naming each digit (CLIP's published metric, at
  # digit scale).
  c.evals.zero_shot = dict(type="zero_shot", **dict(
      class_names=("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                   "nine"),
      templates=("a handwritten {}", "the digit {}"),
      tokenize=f"tokenize('prompt', 'text', max_len={max_len})", num_examples=500))
