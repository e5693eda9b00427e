"""int8 PTQ of one Dense layer: the output error stays within the bound that the
per-channel scales imply (rounding moves each int8 value by at most half a step)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# qwix maps a channel's absmax to 127.5, so that rounding uses all of [-128, 127].
QMAX = 127.5

from mmjax.quant import layers as quant_layers, ptq


class OneDense(nn.Module):
  def initialize(self, batch):
    return self(batch)

  @nn.compact
  def __call__(self, batch):
    return {"logits": nn.Dense(16, use_bias=False, name="proj")(batch["x"])}


@pytest.fixture(scope="module")
def dense():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(8, 64)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(64, 16)) * np.linspace(0.01, 3, 16), jnp.float32)
  model, batch = OneDense(), {"x": x}
  plan = quant_layers.plan_layers(model, quant_layers.example_batch(batch))
  return model, batch, {"params": {"proj": {"kernel": w}}}, plan


def _quantized_outputs(dense, method, statistic="mean"):
  model, batch, variables, plan = dense
  qmodel, qvariables = ptq.quantize(model, variables, method, plan,
                                    quant_layers.example_batch(batch), [batch], statistic)
  return qmodel.apply(qvariables, batch)["logits"], qvariables


def test_weight_only_error_within_half_a_step_per_weight(dense):
  _, batch, variables, plan = dense
  assert plan.quantized == ("proj",)
  x, w = batch["x"], variables["params"]["proj"]["kernel"]
  y_q, qvariables = _quantized_outputs(dense, "int8_weight_only")
  scale = np.abs(np.asarray(w)).max(axis=0) / QMAX            # per output channel
  stored = qvariables["params"]["proj"]["kernel"].array
  assert stored.qvalue.dtype == jnp.int8
  np.testing.assert_allclose(np.asarray(stored.scale).ravel(), scale, rtol=1e-6)
  bound = np.abs(np.asarray(x)).sum(axis=1, keepdims=True) * scale / 2
  error = np.abs(np.asarray(y_q) - np.asarray(x @ w))
  assert (error <= bound * (1 + 1e-5) + 1e-6).all()
  assert error.max() > 0   # it did quantize


def test_dynamic_range_error_within_the_bound_of_both_roundings(dense):
  _, batch, variables, _ = dense
  x, w = np.asarray(batch["x"]), np.asarray(variables["params"]["proj"]["kernel"])
  y_q, _ = _quantized_outputs(dense, "int8_dynamic")
  w_scale = np.abs(w).max(axis=0) / QMAX
  w_q = np.round(w / w_scale) * w_scale
  # |x W - x_q W_q| <= |x - x_q| |W_q| + |x| |W - W_q|, each rounding at most half a
  # step; the input's step is at most the whole tensor's (qwix may use finer scales).
  x_scale = np.abs(x).max() / QMAX
  bound = (x_scale / 2 * np.abs(w_q).sum(axis=0) +
           np.abs(x).sum(axis=1, keepdims=True) * w_scale / 2)
  error = np.abs(np.asarray(y_q) - x @ w)
  assert (error <= bound * (1 + 1e-5)).all()
  weight_only = np.asarray(_quantized_outputs(dense, "int8_weight_only")[0])
  assert not np.allclose(np.asarray(y_q), weight_only)   # the input was rounded too


@pytest.mark.parametrize("statistic, of_row_absmax", [
    ("mean", np.mean), ("max", np.max), ("p90", lambda a: np.percentile(a, 90))])
def test_static_range_calibrated_scales_stay_close(dense, statistic, of_row_absmax):
  _, batch, variables, _ = dense
  x, w = np.asarray(batch["x"]), np.asarray(variables["params"]["proj"]["kernel"])
  y_q, qvariables = _quantized_outputs(dense, "int8_static", statistic)
  # One input scale per layer, fixed by the calibration batch: the statistic of the
  # examples' (rows') absmax.
  (scale,) = [np.asarray(v.array) for k, v in qvariables["params"]["proj"].items()
              if k.endswith("_scale")]
  np.testing.assert_allclose(scale.ravel(), [of_row_absmax(np.abs(x).max(axis=1)) / QMAX],
                             rtol=1e-5)
  # Values beyond the fixed range are clipped: their excess adds to the rounding.
  s = scale.item()
  excess = np.abs(x - np.clip(x, -128 * s, 127 * s))
  w_scale = np.abs(w).max(axis=0) / QMAX
  w_q = np.round(w / w_scale) * w_scale
  bound = ((excess + s / 2) @ np.abs(w_q) +
           np.abs(x).sum(axis=1, keepdims=True) * w_scale / 2)
  assert (np.abs(np.asarray(y_q) - x @ w) <= bound * (1 + 1e-5)).all()
