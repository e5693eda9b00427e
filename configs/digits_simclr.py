r"""SimCLR (Chen et al. 2020) contrastive pretraining of a small ViT on the digits.

Two views per image are made on the device (random resized crop, flip off for digits,
brightness/contrast jitter) and pulled together with the NT-Xent loss at temperature 0.5
(the paper's CIFAR setting), through a 2-layer projection head.

Reproduces: nothing published at this scale (SimCLR's CIFAR-10 ResNet-18 reference is
~91% linear probe after 1,000 epochs). Expected: contrastive top-1 accuracy 0.17 on test
batches of 250 (each view picks its partner among 499 candidates; chance 0.002) after 300
steps, 102 s wall time on 2 CPU cores (measured 2026-11-25; docs/benchmarks.md).

Command:
  python -m mmjax.main --config=configs/digits_simclr.py --workdir=/tmp/mmjax_simclr
"""
from mmjax.config import default_config


def get_config():
  c = default_config()
  c.data.preprocess_train = "to_float|keep('image')"
  c.data.preprocess_eval = "to_float|keep('image')"
  c.model = dict(name="vit", image_size=28, patch_size=4, channels=1, width=64, depth=4,
                 num_heads=4, mlp_dim=128, num_classes=0, pool="gap", projection_dim=32)
  c.objective = dict(name="simclr", temperature=0.5, flip=False, crop_scale=(0.6, 1.0),
                     jitter=0.4)
  c.optim.update(dict(name="adamw", learning_rate=2e-3, warmup_steps=30,
                      weight_decay=0.05))
  c.train.update(dict(total_steps=300, batch_size=128, log_every=50, eval_every=150,
                      checkpoint_every=150))
  c.train.eval_batch_size = 250
  c.evals.loss.max_batches = 2
  return c
