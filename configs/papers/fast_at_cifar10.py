r"""Fast adversarial training on CIFAR-10 (Wong, Rice & Kolter 2020).

Reproduces (`:full`, TFDS `cifar10`): PreActResNet-18, FGSM with a uniform random start,
eps 8/255, alpha 10/255, 15 epochs of batch 128, SGD (momentum 0.9, weight decay 5e-4)
with a one-cycle rate peaking at 0.2 at 40%, random crops (pad 4) and flips, and the
catastrophic-overfitting guard every epoch (PGD-5, step 2/255, on a held training batch).
Published: 83.81% clean, 46.06% under PGD-50 with 10 restarts (PGD-7 training: 82.46 /
50.69). The robust eval is that PGD-50x10 (step 2/255) on 1,000 test images with the
sanity suite. Deviation: Wong et al. train in mixed precision; this config is float32.

`:tiny` runs a WRN-10-1 (pre-activation blocks, CPU-sized) on the embedded digits resized
to 32x32 RGB with eps 0.1 (alpha 0.125), 300 steps of batch 64, a guard every 30 steps and
a PGD-20 eval on 500 digits. Expected (:tiny): docs/robustness.md.

Commands:
  python -m mmjax.main --config=configs/papers/fast_at_cifar10.py:tiny --workdir=/tmp/fast_c
  tfds build cifar10 && python -m mmjax.main --config=configs/papers/fast_at_cifar10.py \
      --workdir=/tmp/fast_cifar_full
"""
from mmjax.config import default_config
from configs.common import config_variant, use_cifar10, use_embedded_digits


def get_config(arg=None):
  variant = config_variant(arg, "configs/papers/fast_at_cifar10.py")
  c = default_config()
  use_cifar10(c)
  c.model = dict(name="preact_resnet18", num_classes=10)
  c.objective = dict(name="supervised")
  steps_per_epoch, epochs, batch = 391, 15, 128
  c.adversarial.update(dict(kind="madry", attack="fgsm_rs", eps=8 / 255,
                            step_size=10 / 255, guard_every=steps_per_epoch,
                            guard_steps=5, guard_step_size=2 / 255))
  c.evals.robust = dict(type="robust", attack="pgd", eps=8 / 255, steps=50,
                        step_size=2 / 255, restarts=10, num_examples=1000,
                        curve_eps=(2 / 255, 4 / 255, 8 / 255, 16 / 255))
  c.train.eval_batch_size = 500
  if variant == "tiny":
    use_embedded_digits(c, image_size=32, rgb=True, augment="random_crop(32, pad=2)")
    c.model = dict(name="wide_resnet", depth=10, widen_factor=1, num_classes=10)
    steps_per_epoch, epochs, batch = 30, 10, 64
    c.adversarial.update(dict(eps=0.1, step_size=0.125, guard_every=steps_per_epoch,
                              guard_step_size=0.025))
    c.evals.robust.update(dict(eps=0.1, steps=20, step_size=0.01, restarts=1,
                               num_examples=500, curve_eps=(0.05, 0.1, 0.2, 0.3)))
  total = steps_per_epoch * epochs
  c.optim.update(dict(name="sgd", learning_rate=0.2, momentum=0.9, schedule="linear",
                      warmup_steps=int(0.4 * total), weight_decay=5e-4, no_decay=()))
  c.train.update(dict(total_steps=total, batch_size=batch, log_every=steps_per_epoch,
                      eval_every=0, checkpoint_every=steps_per_epoch * 5))
  return c
