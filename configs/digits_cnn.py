r"""The MNIST CNN of Wong et al. (2020), trained with plain cross-entropy on the digits.

Reproduces: the clean (non-adversarial) baseline architecture of Fast-AT's MNIST setting,
Conv16(4x4,s2,p1)-Conv32(4x4,s2,p1)-FC100-FC10 with Adam, batch 100 and a one-cycle
learning rate peaking at 40% of training, on the 4,000 embedded training digits (the
paper uses all 60,000 MNIST digits; its clean accuracy there is ~99%).

Expected: 0.970 eval accuracy on the 1,000 test digits after 400 steps, 11 s wall time on
2 CPU cores (measured 2026-11-25; docs/benchmarks.md).

Command:
  python -m mmjax.main --config=configs/digits_cnn.py --workdir=/tmp/mmjax_cnn
"""
from mmjax.config import default_config


def get_config():
  c = default_config()
  c.data.preprocess_train = "to_float|keep('image', 'label')"
  c.data.preprocess_eval = "to_float|keep('image', 'label')"
  c.model = dict(name="mnist_cnn", num_classes=10)
  c.objective = dict(name="supervised")
  c.optim.update(dict(name="adamw", learning_rate=5e-3, schedule="linear",
                      warmup_steps=160, weight_decay=0.0))
  c.train.update(dict(total_steps=400, batch_size=100, log_every=50, eval_every=200,
                      checkpoint_every=200))
  c.train.eval_batch_size = 500
  return c
