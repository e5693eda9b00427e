r"""PGD adversarial training on CIFAR-10 (Madry, Makelov, Schmidt, Tsipras & Vladu 2018,
"Towards deep learning models resistant to adversarial attacks").

Reproduces (`:full`, TFDS `cifar10`): WRN-34-10 trained only on PGD examples, l-inf eps
8/255, 7 steps of 2/255 from a random start (the paper's training attack; REFERENCES.md
lists 10 steps of 2/255 for the AutoAttack-evaluated reproduction, set
`--config.adversarial.steps=10` for it), SGD (momentum 0.9) at 0.1 with weight decay 2e-4,
80,000 steps of batch 128, the rate x0.1 at 40,000 and 60,000, random crops (pad 4) and
flips, pixels in [0, 1] without normalisation. Published: 87.3% clean, 45.8% under PGD-20
(Madry et al.'s CIFAR-10 challenge); 87.1% clean, 44.0% under AutoAttack (REFERENCES.md).
The robust eval is AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square) on 1,000 test
images with the sanity suite; the PGD-20 figure is `--config.evals.robust.attack=pgd
--config.evals.robust.steps=20 --config.evals.robust.step_size=0.00784` (docs/robustness.md).
Expected time: several hours on one H100 (8 forward and backward passes per step, ~1.6e18
training FLOPs; an estimate, not measured).

Deviations: mmjax's WRN uses pre-activation blocks (as TRADES' WRN-34-10), Madry et al.'s
TensorFlow ResNet orders its blocks slightly differently; float32 throughout.

`:tiny` runs a WRN-10-1 (same pre-activation blocks, CPU-sized) on the embedded digits
resized to 32x32 RGB, eps 0.1 (PGD-7, step 0.025), 300 steps of batch 64 with the rate x0.1
at 50% and 75%, and a PGD-20 eval on 500 digits. Measured (2026-11-25, 2 shared CPU cores,
8 min 52 s of which ~5 min the eval's sanity suite and curve): 93.8% clean, 80.8% under
PGD-20 at eps 0.1, sanity suite passed. docs/reproductions.md.

Commands:
  python -m mmjax.main --config=configs/papers/madry_pgd_cifar10.py:tiny --workdir=/tmp/madry_c
  tfds build cifar10 && python -m mmjax.main --config=configs/papers/madry_pgd_cifar10.py \
      --workdir=/tmp/madry_cifar_full
"""
from mmjax.config import default_config
from configs.common import config_variant, use_cifar10, use_embedded_digits


def get_config(arg=None):
  variant = config_variant(arg, "configs/papers/madry_pgd_cifar10.py")
  c = default_config()
  use_cifar10(c)
  c.model = dict(name="wide_resnet", depth=34, widen_factor=10, num_classes=10)
  c.objective = dict(name="supervised")
  c.adversarial.update(dict(kind="madry", attack="pgd", eps=8 / 255, step_size=2 / 255,
                            steps=7))
  total, batch, log = 80_000, 128, 391
  c.optim.update(dict(name="sgd", learning_rate=0.1, momentum=0.9, schedule="piecewise",
                      lr_boundaries=(0.5, 0.75), lr_decay=0.1, weight_decay=2e-4,
                      no_decay=()))
  c.evals.robust = dict(type="robust", attack="autoattack", version="standard", eps=8 / 255,
                        num_examples=1000, curve_eps=(2 / 255, 4 / 255, 8 / 255, 16 / 255))
  c.train.eval_batch_size = 500
  if variant == "tiny":
    use_embedded_digits(c, image_size=32, rgb=True, augment="random_crop(32, pad=2)")
    c.model.update(dict(depth=10, widen_factor=1))
    c.adversarial.update(dict(eps=0.1, step_size=0.025))
    c.optim.update(dict(learning_rate=0.05))
    c.evals.robust.update(dict(attack="pgd", steps=20, eps=0.1, step_size=0.01,
                               num_examples=500,
                               curve_eps=(0.05, 0.1, 0.2, 0.3)))
    total, batch, log = 300, 64, 30
  c.train.update(dict(total_steps=total, batch_size=batch, log_every=log, eval_every=0,
                      checkpoint_every=total // 4))
  return c
