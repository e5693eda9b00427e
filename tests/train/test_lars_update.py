"""optim.name='lars': the SimCLR LARS update (trust ratio, decay and its exemptions)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.errors import ConfigError
from mmjax.train import optim

# A kernel [2, 2] that LARS adapts and a bias [2] that `no_decay` exempts.
PARAMS = {"dense": {"kernel": jnp.array([[3.0, 0.0], [0.0, 4.0]]),
                    "bias": jnp.array([1.0, -1.0])}}
GRADS = {"dense": {"kernel": jnp.array([[0.5, 0.0], [0.0, 0.0]]),
                   "bias": jnp.array([0.2, 0.4])}}


def _lars(**kw):
  cfg = dict(name="lars", learning_rate=2.0, schedule="constant", warmup_steps=0,
             weight_decay=0.1, no_decay=("bias",), momentum=0.9)
  cfg.update(kw)
  return optim.make_optimizer(cfg, total_steps=10)[0]


def test_first_update_is_the_trust_ratio_scaled_decayed_gradient():
  tx = _lars()
  updates, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS)
  w, g = PARAMS["dense"]["kernel"], GRADS["dense"]["kernel"]
  u = g + 0.1 * w                                   # [[0.8, 0], [0, 0.4]]
  ratio = 0.001 * 5.0 / float(jnp.linalg.norm(u))   # ‖w‖ = 5
  np.testing.assert_allclose(np.asarray(updates["dense"]["kernel"]),
                             np.asarray(-2.0 * ratio * u), rtol=1e-5)
  # The exempt bias: plain SGD, no decay, no trust ratio.
  np.testing.assert_allclose(np.asarray(updates["dense"]["bias"]), [-0.4, -0.8], rtol=1e-6)


def test_momentum_accumulates_the_scaled_updates():
  tx = _lars(weight_decay=0.0, no_decay=())
  state = tx.init(PARAMS)
  first, state = tx.update(GRADS, state, PARAMS)
  second, _ = tx.update(GRADS, state, PARAMS)   # same params and grads: 1.9x the first
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
    np.testing.assert_allclose(np.asarray(b), 1.9 * np.asarray(a), rtol=1e-5)


def test_custom_trust_coefficient_scales_the_step():
  small = _lars(no_decay=())
  big = _lars(no_decay=(), trust_coefficient=0.01)
  a, _ = small.update(GRADS, small.init(PARAMS), PARAMS)
  b, _ = big.update(GRADS, big.init(PARAMS), PARAMS)
  np.testing.assert_allclose(np.asarray(b["dense"]["kernel"]),
                             10 * np.asarray(a["dense"]["kernel"]), rtol=1e-5)


def test_bad_trust_coefficient_raises_config_error():
  with pytest.raises(ConfigError, match="trust_coefficient"):
    _lars(trust_coefficient=0.0)
