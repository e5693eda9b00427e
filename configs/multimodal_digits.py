r"""Image + caption + DTMF audio of the embedded digits, aligned by cross-modal contrast.

A three-tower multimodal transformer (`model.name='multimodal'`, CLIP-style towers) with
InfoNCE between image and text and between image and audio, plus a supervised head on the
fused features. `:siglip` uses the sigmoid loss (SigLIP init: scale 10, bias -10);
`:concat` and `:bottleneck` swap the fusion. `:image_audio` drops the caption (it gives
the label away) and evaluates with AutoAttack on the image and the spectrogram, jointly
and per modality. Audio is augmented (gain, noise,
SpecAugment) before the log-mel spectrogram is patched AST-style, batched on the devices.

Reproduces: nothing published; it is the multimodal path end to end on CPU.
Measured (2026-11-25, 300 steps, 2 shared CPU cores, 77 s; pixel and audio ops on the
devices): eval contrastive loss 4.16 (4.51 at step 150), in-batch image->text top-1 0.045
among 250 examples. Only instance-level matches count, and with ~25 examples per digit in
a batch and templated captions and tones, 0.04 is what a perfect class-level alignment
scores. The supervised head on the fused
features reaches 1.0, because the caption and the tone give the label away. Class-level
retrieval recall and an image-only linear probe come with the issue-5 quickstart.

Command:
  python -m mmjax.main --config=configs/multimodal_digits.py --workdir=/tmp/mm_digits
"""
import math

from mmjax.config import default_config
from configs.common import use_multimodal_digits
from mmjax.errors import ConfigError

VARIANTS = ("clip", "siglip", "concat", "bottleneck", "image_audio")


def get_config(arg=None):
  variant = arg or "clip"
  if variant not in VARIANTS:
    raise ConfigError(f"configs/multimodal_digits.py takes one of {VARIANTS}, got {arg!r}.")
  c = default_config()
  use_multimodal_digits(c)
  fusion = variant if variant in ("concat", "bottleneck") else "towers"
  c.model = dict(name="multimodal", modalities=("image", "text", "audio"), fusion=fusion,
                 width=64, depth=2, num_heads=4, mlp_dim=128, image_size=28, patch_size=4,
                 vocab_size=260, max_len=32, mel_bins=64, frames=28, spec_patch=(8, 4),
                 # The log-mel mean and std over the eval digits (AST normalises so).
                 spec_mean=-1.5, spec_std=1.5, projection_dim=32, num_classes=10)
  pairs = (("image", "text"), ("image", "audio"))
  contrastive = dict(name="contrastive", weight=1.0, pairs=pairs)
  if variant == "siglip":
    contrastive["loss"] = "sigmoid"
    c.model.update(dict(logit_scale_init=math.log(10.0), logit_bias_init=-10.0))
  c.objective = dict(name="sum", terms=dict(contrastive=contrastive,
                                            supervised=dict(weight=1.0)))
  c.optim.update(dict(name="adamw", learning_rate=2e-3, warmup_steps=30,
                      weight_decay=0.05, clip_norm=1.0))
  c.train.update(dict(total_steps=300, batch_size=64, log_every=50, eval_every=150,
                      checkpoint_every=150))
  c.train.eval_batch_size = 250
  c.evals.loss.max_batches = 2
  if variant == "image_audio":
    image_audio_autoattack(c)
  return c


def image_audio_autoattack(c):
  """`:image_audio`: the digit image and its DTMF tone only (the caption names the label),
  InfoNCE between them plus the supervised head on the fused features; the robust eval is
  AutoAttack (standard) on the image (eps 0.1 in pixels) and the log-mel spectrogram (eps
  0.25 in log-mel units, a sixth of its spread), jointly and each modality alone."""
  c.model.modalities = ("image", "audio")
  contrastive = dict(name="contrastive", weight=1.0, pairs=(("image", "audio"),))
  c.objective = dict(name="sum", terms=dict(contrastive=contrastive,
                                            supervised=dict(weight=1.0)))
  c.evals.robust = dict(type="robust", attack="autoattack", version="standard",
                        modalities=("image", "spectrogram"),
                        eps={"image": 0.1, "spectrogram": 0.25}, num_examples=200,
                        per_modality=True, sanity=False)
  c.train.eval_every = 0
