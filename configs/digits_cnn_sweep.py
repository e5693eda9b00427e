r"""A hyperparameter search over configs/digits_cnn.py (docs/sweeps.md): Fast-AT
adversarial training of Wong et al.'s MNIST CNN (FGSM from a random start, step 1.25 eps)
with the learning rate (log-uniform 1e-4..3e-2) and the training eps (0.05, 0.1, 0.15,
0.2) searched for the best PGD-10 accuracy at eps 0.1 on 200 test digits; 80 steps a
trial (digits_cnn.py trains 400), an eval every 20 for the median pruner.

Expected: 20 trials in 4-5 min on 2 CPU cores, the best near lr 0.02, eps 0.15 with
robust accuracy ~0.85 (measured 2026-12-07, docs/sweeps.md). As a plain run it trains the
config's own values (lr 5e-3, eps 0.1).

Commands:
  python -m mmjax.sweep --config=configs/digits_cnn_sweep.py --workdir=/tmp/cnn_sweep
  python -m mmjax.main --config=configs/digits_cnn_sweep.py --workdir=/tmp/cnn_fast_at
"""
from configs import digits_cnn
from mmjax.config import sweep_space


def get_config():
  c = digits_cnn.get_config()
  # Unclipped random start as in Wong et al.'s MNIST code; step_size unset: 1.25 eps,
  # so it follows the searched eps.
  c.adversarial.update(dict(kind="madry", attack="fgsm_rs", eps=0.1, clip_start=False))
  c.train.update(dict(total_steps=80, eval_every=20, checkpoint_every=40))
  c.optim.warmup_steps = 32   # the one-cycle peak at 40%, as digits_cnn.py
  c.evals.robust = dict(type="robust", attack="pgd", eps=0.1, steps=10, num_examples=200,
                        sanity=False)
  c.sweep.update(dict(metric="robust/accuracy", direction="maximize", num_trials=20))
  c.sweep.parameters = sweep_space({
      "optim.learning_rate": dict(type="log_uniform", low=1e-4, high=3e-2),
      "adversarial.eps": dict(type="categorical", choices=(0.05, 0.1, 0.15, 0.2)),
  })
  return c
