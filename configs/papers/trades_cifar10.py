r"""TRADES on CIFAR-10 (Zhang et al. 2019, "Theoretically principled trade-off between
robustness and accuracy").

Reproduces (`:full`, TFDS `cifar10`): WRN-34-10, loss CE + 6 * KL(f(x) || f(x')), the
attack maximising the KL with 10 steps of 0.007 inside eps 0.031, SGD (momentum 0.9) at
0.1 with weight decay 2e-4, 76 epochs of batch 128 with the rate divided by 10 after epoch
75, random crops (pad 4) and flips. Published: 84.92% clean, 56.61% under PGD-20, 53.08%
under AutoAttack. The robust eval is AutoAttack (standard) on 1,000 test images with the
sanity suite; the PGD-20 figure is `--config.evals.robust.attack=pgd
--config.evals.robust.steps=20 --config.evals.robust.step_size=0.003` (docs/robustness.md).

`:tiny` runs a WRN-10-1 (same pre-activation blocks, CPU-sized) on the embedded digits
resized to 32x32 RGB, eps 0.1 (10 steps of 0.025), 300 steps of batch 64, with a PGD-20
eval on 500 digits. Expected (:tiny): docs/robustness.md.

Commands:
  python -m mmjax.main --config=configs/papers/trades_cifar10.py:tiny --workdir=/tmp/trades
  tfds build cifar10 && python -m mmjax.main --config=configs/papers/trades_cifar10.py \
      --workdir=/tmp/trades_full
"""
from mmjax.config import default_config
from configs.common import config_variant, use_cifar10, use_embedded_digits
from mmjax.models.cnn import CIFAR10_MEAN, CIFAR10_STD


def get_config(arg=None):
  variant = config_variant(arg, "configs/papers/trades_cifar10.py")
  c = default_config()
  use_cifar10(c)
  c.model = dict(name="wide_resnet", depth=34, widen_factor=10, num_classes=10,
                 pixel_mean=CIFAR10_MEAN, pixel_std=CIFAR10_STD)
  c.objective = dict(name="supervised")
  c.adversarial.update(dict(kind="trades", attack="pgd", eps=0.031, step_size=0.007,
                            steps=10, beta=6.0))
  steps_per_epoch, epochs = 391, 76
  c.optim.update(dict(name="sgd", learning_rate=0.1, momentum=0.9, schedule="piecewise",
                      lr_boundaries=(75 / 76,), lr_decay=0.1, weight_decay=2e-4,
                      no_decay=()))
  c.evals.robust = dict(type="robust", attack="autoattack", version="standard", eps=0.031,
                        num_examples=1000, curve_eps=(2 / 255, 4 / 255, 8 / 255, 16 / 255))
  c.train.eval_batch_size = 500
  batch = 128
  if variant == "tiny":
    use_embedded_digits(c, image_size=32, rgb=True, augment="random_crop(32, pad=2)")
    c.model.update(dict(depth=10, widen_factor=1))
    c.adversarial.update(dict(eps=0.1, step_size=0.025))
    c.optim.update(dict(learning_rate=0.05))
    c.evals.robust.update(dict(attack="pgd", steps=20, eps=0.1, step_size=0.01,
                               num_examples=500,
                               curve_eps=(0.05, 0.1, 0.2, 0.3)))
    steps_per_epoch, epochs, batch = 30, 10, 64
  c.train.update(dict(total_steps=steps_per_epoch * epochs, batch_size=batch,
                      log_every=steps_per_epoch, eval_every=0,
                      checkpoint_every=steps_per_epoch * 5))
  return c
