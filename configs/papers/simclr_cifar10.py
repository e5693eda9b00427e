r"""SimCLR on CIFAR-10 (Chen, Kornblith, Norouzi & Hinton 2020, "A simple framework for
contrastive learning of visual representations").

Reproduces (`:full`, TFDS `cifar10`): a ResNet-18 with the CIFAR stem (3x3, no max-pool)
and a 2-layer projection head (512 -> 512 -> 128), NT-Xent at temperature 0.5, batch 512,
1,000 epochs (97,656 steps), LARS (momentum 0.9, trust coefficient 0.001) at 1.0 x 512/256
= 2.0 with 10 warmup epochs then cosine, weight decay 1e-4 with biases and BatchNorm exempt
from decay and from the trust ratio (the SimCLR repository's CIFAR-10 command). Views: random
resized crop (scale 0.08-1), flip, colour jitter 0.4 (strength 0.5) with probability 0.8,
grayscale with probability 0.2. Published: ~91% linear
probe for ResNet-18 (REFERENCES.md; 94.0% for ResNet-50 in the paper). Expected time: a few
hours on one H100 (estimated from ~1.7e17 training FLOPs, not measured).

Eval: NT-Xent and contrastive top-1 accuracy on the test split, and the linear eval
(`evals.probe`): logistic regression on the frozen pooled features of all 50,000 train
images, tested on the 10,000 test images, clean and under PGD-20 at 8/255 through encoder
+ probe (the SimCLR baseline of RoCL's table, ~0%), and the same probe on the initial
encoder. The paper's probe is trained with SGD and augmentation; this one is full-batch
L2-regularised logistic regression (500 steps) on unaugmented images.

Deviations: a pre-activation ResNet-18 (mmjax's `preact_resnet18`, pixels normalised with
CIFAR-10 statistics) instead of the v1 ResNet-18; the projection head has no BatchNorm;
the colour jitter has no hue term (mmjax's `augment.color_jitter` does brightness,
contrast and saturation, in that fixed order).

`:tiny` runs a WRN-10-1 (pre-activation blocks, CPU-sized) with the same loss and LARS on
the embedded digits (crop scale 0.6-1, no flip), 300 steps of batch 128, probe on 2,000 train
/ 500 test digits with PGD-10 at eps 0.1. Measured (2026-11-25, 2 shared CPU cores, 3 min 35
s): contrastive accuracy 0.836 on test batches of 250 (chance 0.002); probe 93.2% (73.6% on
the initial encoder), 0.0% under PGD-10. docs/reproductions.md.

Commands:
  python -m mmjax.main --config=configs/papers/simclr_cifar10.py:tiny --workdir=/tmp/simclr
  tfds build cifar10 && python -m mmjax.main --config=configs/papers/simclr_cifar10.py \
      --workdir=/tmp/simclr_full
"""
from mmjax.config import default_config
from configs.common import config_variant, use_cifar10, use_embedded_digits


def get_config(arg=None):
  variant = config_variant(arg, "configs/papers/simclr_cifar10.py")
  c = default_config()
  use_cifar10(c)
  # The views are made on the device by the objective; the pipeline only decodes.
  c.data.preprocess_train = "to_float|keep('image', 'label')"
  c.model = dict(name="preact_resnet18", num_classes=0, projection_dim=128)
  c.objective = dict(name="simclr", temperature=0.5, crop_scale=(0.08, 1.0), flip=True,
                     jitter=0.4, jitter_prob=0.8, grayscale_prob=0.2)
  batch, epochs = 512, 1000
  steps_per_epoch = 50_000 / batch
  c.optim.update(dict(name="lars", learning_rate=1.0 * batch / 256, momentum=0.9,
                      weight_decay=1e-4, schedule="cosine",
                      warmup_steps=int(10 * steps_per_epoch)))
  c.train.eval_batch_size = 500
  c.evals.loss.max_batches = 0
  # Linear eval: a probe on the frozen pooled features of all 50,000 train images, clean
  # and under PGD-20 through encoder + probe.
  c.evals.probe = dict(type="probe", modality="image", train_examples=50_000,
                       test_examples=10_000, attack="pgd", eps=8 / 255, attack_steps=20)
  log = int(steps_per_epoch)
  if variant == "tiny":
    use_embedded_digits(c)
    c.model = dict(name="wide_resnet", depth=10, widen_factor=1, num_classes=0,
                   projection_dim=32)
    c.objective.update(dict(crop_scale=(0.6, 1.0), flip=False))
    batch, epochs, log = 128, 10, 30
    c.optim.update(dict(learning_rate=1.0 * batch / 256, warmup_steps=30))
    c.train.eval_batch_size = 250
    c.evals.loss.max_batches = 2
    c.evals.probe.update(dict(train_examples=2000, test_examples=500, eps=0.1,
                              attack_steps=10))
    steps_per_epoch = 30
  total = int(epochs * steps_per_epoch)
  c.train.update(dict(total_steps=total, batch_size=batch, log_every=log, eval_every=0,
                      checkpoint_every=max(total // 10, 1)))
  return c
