"""The contrastive objective's `max_scale`: CLIP's cap of t = exp(logit_scale) at 100 (the
default) and SigLIP's uncapped t (max_scale=0), on the loss value, the temperature metric
and the gradient of the learnable scale."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models, objectives
from mmjax.errors import ConfigError
from mmjax.objectives import losses
from mmjax.objectives.contrastive import sigmoid_loss

# exp(log 200) = 200 is past CLIP's cap of 100.
LOG_T = math.log(200.0)


def _setup(**objective):
  """A 1-layer image + text model with logit_scale = log 200, its params and a batch of 4."""
  model = models.build_model(dict(name="multimodal", modalities=("image", "text"),
                                  width=16, depth=1, num_heads=2, mlp_dim=32,
                                  projection_dim=8, logit_scale_init=LOG_T,
                                  logit_bias_init=-10.0))
  batch = {"image": jax.random.uniform(jax.random.key(0), (4, 28, 28, 1)),
           "text": jax.random.randint(jax.random.key(1), (4, 8), 4, 260)}
  params = models.init_variables(model, batch, jax.random.key(2))["params"]
  loss_fn = objectives.make_objective(dict(name="contrastive", **objective), model)
  run = jax.jit(lambda p: loss_fn(p, batch, jax.random.key(3), model_state={}, train=True))
  return model, params, batch, run


def _scale_grad(run, params):
  return float(jax.grad(lambda p: run(p)[0])(params)["logit_scale"])


def test_default_caps_the_scale_at_100_and_stops_its_gradient():
  _, params, _, run = _setup(loss="infonce")
  _, (metrics, _) = run(params)
  np.testing.assert_allclose(metrics["temperature"], 1 / 100, rtol=1e-6)
  assert _scale_grad(run, params) == 0.0   # past the cap, as CLIP's clipped parameter


def test_uncapped_sigmoid_loss_uses_the_learned_scale():
  model, params, batch, run = _setup(loss="sigmoid", max_scale=0)
  loss, (metrics, _) = run(params)
  np.testing.assert_allclose(metrics["temperature"], 1 / 200, rtol=1e-6)
  assert _scale_grad(run, params) != 0.0
  # The value: SigLIP's loss of the normalised projections [4, 8] with t = 200, b = -10.
  out = model.apply({"params": params}, batch)
  za, zb = (losses.l2_normalize(out[f"{m}_projection"]) for m in ("image", "text"))
  want = sigmoid_loss(za, zb, jnp.float32(200.0), jnp.float32(-10.0), jnp.ones(4))
  np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_a_higher_cap_is_honoured():
  _, params, _, run = _setup(loss="infonce", max_scale=150.0)
  _, (metrics, _) = run(params)
  np.testing.assert_allclose(metrics["temperature"], 1 / 150, rtol=1e-6)


@pytest.mark.parametrize("bad", [-1.0, "100", True])
def test_bad_max_scale_is_named(bad):
  with pytest.raises(ConfigError, match="objective.max_scale"):
    _setup(max_scale=bad)
