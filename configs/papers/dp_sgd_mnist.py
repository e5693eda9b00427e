r"""DP-SGD on MNIST (Abadi et al. 2016) with tempered sigmoids (Papernot et al. 2021).

Reproduces (default, TFDS `mnist`, 60,000 digits): the DP-SGD MNIST net of TF Privacy's
tutorial with tanh activations (`dp_mnist_cnn`, 26,010 parameters), Poisson batches of
expected size 256 (q = 256/60,000), per-example clipping to 1.0, noise multiplier 1.1,
60 epochs (14,063 steps), plain SGD, δ = 1e-5, RDP accounting as in the paper.
Published: 98.1% test accuracy at ε = 2.93 (96.1% with ReLU at the same ε). The
accountant's ε for this run is checked against 2.93 in tests/privacy. The paper's
learning rate is not in the material available offline: 0.5 here is the one that
trains best on the embedded digits (docs/privacy.md); measure before quoting.

`:digits` runs the recipe on the 4,000 embedded training digits, where the same ε
costs far more noise (q = 256/4,000 is 15x larger): the noise multiplier is calibrated
to privacy.target_epsilon (3 by default; 1 and 8 are an override away) over 30 epochs
(469 steps), δ = 1e-5. `:nonprivate` is the same model and schedule without DP, the
baseline of docs/privacy.md's table. `:tiny` is a seconds-sized run (ε = 8, 40 steps)
with the canary audit.

Commands:
  python -m mmjax.main --config=configs/papers/dp_sgd_mnist.py:digits --workdir=/tmp/dp_digits
  python -m mmjax.main --config=configs/papers/dp_sgd_mnist.py:digits \
      --config.privacy.target_epsilon=1 --workdir=/tmp/dp_digits_eps1
  python -m mmjax.main --config=configs/papers/dp_sgd_mnist.py:nonprivate --workdir=/tmp/nodp
  tfds build mnist && python -m mmjax.main --config=configs/papers/dp_sgd_mnist.py \
      --workdir=/tmp/dp_mnist_full
"""
import math

from mmjax.config import default_config
from configs.common import config_variant, use_embedded_digits


def get_config(arg=None):
  variant = config_variant(arg, "configs/papers/dp_sgd_mnist.py",
                           ("full", "digits", "nonprivate", "tiny"))
  c = default_config()
  c.data.name = "mnist"
  c.data.train_split, c.data.eval_split = "train", "test"
  c.data.preprocess_train = "to_float|keep('image', 'label')"
  c.data.preprocess_eval = "to_float|keep('image', 'label')"
  # Poisson sampling draws from the whole training set: held in memory (188 MB).
  c.data.in_memory = True
  c.model = dict(name="dp_mnist_cnn", num_classes=10, activation="tanh")
  c.objective = dict(name="supervised")
  c.privacy.update(dict(enabled=True, clip_norm=1.0, noise_multiplier=1.1, delta=1e-5,
                        accountant="rdp", sampling="poisson"))
  train_examples, batch, epochs = 60_000, 256, 60
  if variant != "full":
    use_embedded_digits(c)
    c.data.in_memory = True
    train_examples, epochs = 4_000, 30
    c.privacy.update(dict(noise_multiplier=0.0, target_epsilon=3.0))
  if variant == "nonprivate":
    c.privacy.enabled = False
  if variant == "tiny":
    epochs = 2.5
    c.privacy.update(dict(target_epsilon=8.0, audit_canaries=200))
    c.evals.audit = dict(type="privacy_audit")
  steps = math.ceil(epochs * train_examples / batch)
  c.optim.update(dict(name="sgd", learning_rate=0.5, momentum=0.0, schedule="constant",
                      weight_decay=0.0))
  c.train.update(dict(total_steps=steps, batch_size=batch,
                      log_every=max(1, steps // 20), eval_every=0,
                      checkpoint_every=max(1, steps // 4)))
  c.train.eval_batch_size = 500
  return c
