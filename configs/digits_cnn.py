r"""The MNIST CNN of Wong et al. (2020), trained with plain cross-entropy on the digits.

Reproduces: the clean (non-adversarial) baseline architecture of Fast-AT's MNIST setting,
Conv16(4x4,s2,p1)-Conv32(4x4,s2,p1)-FC100-FC10 with Adam, batch 100 and a one-cycle
learning rate peaking at 40% of training, on the 4,000 embedded training digits (the
paper uses all 60,000 MNIST digits; its clean accuracy there is ~99%).

Expected: 0.970 eval accuracy on the 1,000 test digits after 400 steps, 11 s wall time on
2 CPU cores (measured 2026-11-25; docs/benchmarks.md).

Command:
  python -m mmjax.main --config=configs/digits_cnn.py --workdir=/tmp/mmjax_cnn

`:sweep` is the search of docs/sweeps.md: Fast-AT adversarial training (FGSM-RS, step
1.25 eps) with the learning rate (log-uniform 1e-4..3e-2) and the training eps (0.05..0.2)
searched for the best PGD-10 accuracy at eps 0.1 on 200 test digits, 80 steps a trial
(an eval every 20 for the pruner):
  python -m mmjax.sweep --config=configs/digits_cnn.py:sweep --workdir=/tmp/cnn_sweep
"""
from mmjax.config import default_config, sweep_space


def get_config(arg=None):
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
  if arg == "sweep":
    # Fast-AT (Wong et al.): FGSM from a random start, step 1.25 eps (the default when
    # step_size is unset, so it follows the searched eps), start unclipped as on MNIST.
    c.adversarial.update(dict(kind="madry", attack="fgsm_rs", eps=0.1, clip_start=False))
    c.train.update(dict(total_steps=80, eval_every=20, checkpoint_every=40))
    c.optim.warmup_steps = 32
    c.evals.robust = dict(type="robust", attack="pgd", eps=0.1, steps=10,
                          num_examples=200, sanity=False)
    c.sweep.update(dict(metric="robust/accuracy", direction="maximize", num_trials=20))
    c.sweep.parameters = sweep_space({
        "optim.learning_rate": dict(type="log_uniform", low=1e-4, high=3e-2),
        "adversarial.eps": dict(type="categorical", choices=(0.05, 0.1, 0.15, 0.2)),
    })
  elif arg is not None:
    raise ValueError(f"Unknown variant {arg!r} of configs/digits_cnn.py; use :sweep.")
  return c
