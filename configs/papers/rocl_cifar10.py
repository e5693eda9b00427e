r"""Adversarial contrastive pretraining on CIFAR-10 in the style of RoCL (Kim, Tack & Hwang
2020, "Adversarial self-supervised contrastive learning") and ACL (Jiang et al. 2020,
"Robust pre-training by adversarial contrastive learning").

L = NT-Xent(v1, v2) + lam * NT-Xent(v1 + d1, v2 + d2), (d1, d2) = argmax of NT-Xent over the
l-inf ball around the two augmented views (`adversarial.kind='combined'` around the
`simclr` objective; tests/objectives/test_adversarial_contrastive.py). No labels.

Reproduces (`:full`, TFDS `cifar10`): RoCL's settings (its repository's defaults): ResNet-18
with a 2-layer projection head (512 -> 512 -> 128), temperature 0.5, PGD-7 with a random
start, eps 0.0314 and step 0.007, batch 512 (256 x 2 GPUs), 1,000 epochs, LARS over SGD
(momentum 0.9, trust coefficient 0.001, weight decay 1e-6 on every tensor) warmed up over
10 epochs to 0.1 x 15 = 1.5, then cosine. Published (RoCL, linear eval): 83.71% clean,
40.27% under PGD-20 at 8/255 (REFERENCES.md). Expected time: ~9x simclr_cifar10.py's (9
forward and backward passes per step, ~1.5e18 training FLOPs; an estimate, not measured).

Eval: NT-Xent and contrastive accuracy (clean and under the training attack) on the test
split, and RoCL's linear eval (`evals.probe`): logistic regression on the frozen pooled
features of all 50,000 train images, tested on the 10,000 test images clean and under
PGD-20 at eps 0.0314, step 0.00314 (RoCL's), through encoder + probe, and the same probe
on the initial encoder. RoCL trains
its probe for 150 epochs of SGD; this one is full-batch logistic regression (500 steps).

Deviations: the attack perturbs both views and maximises the batch NT-Xent between them
(ACL's A2A); RoCL perturbs view 1 against view 2 and trains on the three-way NT-Xent of
(v1, v2, v1 + d) plus a regulariser weighted 256. Pre-activation ResNet-18 with CIFAR-10
pixel normalisation; the attack runs BatchNorm in eval mode (RoCL's in train mode); the
colour jitter has no hue term (as configs/papers/simclr_cifar10.py).

`:tiny` runs a WRN-10-1 (pre-activation blocks, CPU-sized) on the embedded digits (crop
scale 0.6-1, no flip) with eps 0.1 (PGD-3, step 0.04), 200 steps of batch 64, probe on
2,000 train / 500 test digits with PGD-10 at eps 0.1. Measured (2026-11-25, 2 shared CPU
cores, 2 min 57 s): contrastive accuracy 0.458 clean, 0.017 under the training attack;
probe 92.8% clean (73.6% on the initial encoder) and 64.2% under PGD-10, where
simclr_cifar10.py:tiny's probe has 93.2% and 0.0%. docs/reproductions.md.

Commands:
  python -m mmjax.main --config=configs/papers/rocl_cifar10.py:tiny --workdir=/tmp/rocl
  tfds build cifar10 && python -m mmjax.main --config=configs/papers/rocl_cifar10.py \
      --workdir=/tmp/rocl_full
"""
import os

from mmjax.config import load_config_file
from configs.common import config_variant


def get_config(arg=None):
  variant = config_variant(arg, "configs/papers/rocl_cifar10.py")
  # SimCLR's data, model, views, schedule shape and linear eval (simclr_cifar10.py), plus
  # the attack on the contrastive loss; RoCL's own optimiser settings and probe attack.
  c = load_config_file(os.path.join(os.path.dirname(__file__), "simclr_cifar10.py"),
                       variant)
  c.adversarial.update(dict(kind="combined", attack="pgd", eps=0.0314, step_size=0.007,
                            steps=7, lam=1.0, clean_weight=1.0, attack_loss="objective"))
  # torchlars applies decay and the trust ratio to every tensor: no exemptions.
  c.optim.update(dict(learning_rate=0.1 * 15, weight_decay=1e-6, no_decay=()))
  c.evals.probe.update(dict(eps=0.0314, attack_step_size=0.00314))
  if variant == "tiny":
    c.adversarial.update(dict(eps=0.1, step_size=0.04, steps=3))
    c.optim.update(dict(learning_rate=1.0, warmup_steps=20))
    c.evals.probe.update(dict(eps=0.1, attack_step_size=0.0))
    c.train.update(dict(total_steps=200, batch_size=64, log_every=25, checkpoint_every=20))
  return c
