"""QAT's fake quantization passes gradients straight through: the gradient of the QAT
model's loss with respect to a kernel is the float model's gradient at the int8-rounded
kernel (nonzero), as if rounding were the identity."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# qwix maps a channel's absmax to 127.5, so that rounding uses all of [-128, 127].
QMAX = 127.5

from mmjax.quant import qat
from tests.quant.test_int8_matmul_error_is_bounded_by_scales import OneDense


def _loss(model, params, x):
  return jnp.sum(jnp.sin(model.apply({"params": params}, {"x": x})["logits"]))


@pytest.mark.parametrize("method", ["int8_weight_only", "int8_dynamic"])
def test_kernel_gradient_is_the_float_gradient_at_the_rounded_kernel(method):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(4, 32)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(32, 16)), jnp.float32)
  model = OneDense()
  qat_model = qat.fake_quantized(model, method)
  grad_qat = jax.grad(lambda p: _loss(qat_model, p, x))({"proj": {"kernel": w}})
  grad_qat = np.asarray(grad_qat["proj"]["kernel"])
  scale = jnp.abs(w).max(axis=0) / QMAX
  w_q = jnp.clip(jnp.round(w / scale), -128, 127) * scale
  x_in = x
  # The float model at the rounded values; the kernel enters linearly, so its gradient
  # is x_in^T dL/dy with dL/dy taken at the rounded forward pass.
  dy = jnp.cos(x_in @ w_q)
  expected = np.asarray(x_in.T @ dy)
  assert np.count_nonzero(grad_qat) == grad_qat.size   # nothing was cut off
  if method == "int8_weight_only":
    np.testing.assert_allclose(grad_qat, expected, rtol=1e-4, atol=1e-5)
  else:   # the rounded input's scales are qwix's own: only as close as its rounding
    np.testing.assert_allclose(grad_qat, expected, atol=0.1 * np.abs(expected).max())
  # And it differs from the plain float gradient (the forward pass was quantized).
  grad_f32 = np.asarray(jax.grad(lambda p: _loss(model, p, x))(
      {"proj": {"kernel": w}})["proj"]["kernel"])
  assert not np.allclose(grad_qat, grad_f32, rtol=1e-6, atol=1e-7)


def test_host_params_are_fake_quantized_as_device_params():
  """qwix recognises a weight only as a jax array (or tracer) among the layer's params:
  an eager apply on host params (jax.device_get) must not silently run the float model."""
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(4, 32)), jnp.float32)
  params = {"proj": {"kernel": jnp.asarray(rng.normal(size=(32, 16)), jnp.float32)}}
  model = OneDense()
  qat_model = qat.fake_quantized(model, "int8_weight_only")
  on_device = qat_model.apply({"params": params}, {"x": x})["logits"]
  on_host = qat_model.apply({"params": jax.device_get(params)}, {"x": x})["logits"]
  np.testing.assert_array_equal(on_host, on_device)
  assert not np.allclose(on_host, model.apply({"params": params}, {"x": x})["logits"],
                         rtol=1e-5, atol=1e-6)


def test_a_model_that_quantizes_no_weight_is_refused():
  x = {"x": jax.ShapeDtypeStruct((4, 32), jnp.float32)}
  trace = lambda m: lambda: jax.eval_shape(lambda b: m.init(jax.random.key(0), b), x)
  model = qat.fake_quantized(OneDense(), "int8_weight_only")
  qat.check_quantizes(model, trace(model))
  assert qat.quantized_weights(model) == 1
  everything_float = qat.fake_quantized(OneDense(), "int8_weight_only", keep_float=(".*",))
  with pytest.raises(RuntimeError, match="quantized no Dense/Conv weight"):
    qat.check_quantizes(everything_float, trace(everything_float))
  assert qat.check_quantizes(OneDense(), lambda: 7) == 7   # a float model: no check
