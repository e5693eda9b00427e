"""canonical_conv: same values and gradients as lax.conv_general_dilated, in and out of loops."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.models.conv import canonical_conv

CASES = [  # (input shape, kernel shape, strides, padding, lhs_dilation, rhs_dilation, dn)
    ((2, 9, 9, 3), (3, 3, 3, 5), (1, 1), ((1, 1), (1, 1)), None, None, ("NHWC", "HWIO", "NHWC")),
    ((2, 10, 8, 2), (4, 4, 2, 3), (2, 2), ((1, 2), (0, 1)), None, None, ("NHWC", "HWIO", "NHWC")),
    ((2, 11, 11, 3), (3, 2, 3, 4), (1, 2), ((0, 0), (1, 1)), None, (2, 1),
     ("NHWC", "HWIO", "NHWC")),
    ((2, 3, 8, 8), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), None, None, ("NCHW", "OIHW", "NCHW")),
    ((3, 12, 2), (5, 2, 4), (3,), ((2, 2),), None, None, ("NWC", "WIO", "NWC")),
    ((2, 5, 5, 2), (3, 3, 2, 2), (1, 1), ((1, 1), (1, 1)), (2, 2), None, ("NHWC", "HWIO", "NHWC")),
]


def _both(case):
  shape_x, shape_w, strides, padding, lhs_dil, rhs_dil, dn = case
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, shape_x)
  w = jax.random.normal(kw, shape_w)
  def make(conv):
    return lambda x, w: conv(x, w, strides, padding, lhs_dilation=lhs_dil,
                             rhs_dilation=rhs_dil, dimension_numbers=dn)
  return x, w, make(jax.lax.conv_general_dilated), make(canonical_conv)


@pytest.mark.parametrize("case", CASES)
def test_values_and_gradients_equal_lax(case):
  x, w, ref, ours = _both(case)
  np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(x, w)
  g_ours = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, w)
  for a, b in zip(g_ours, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", CASES[:2])
def test_gradients_inside_a_loop_equal_lax(case):
  """The case the custom rule exists for: gradients inside a fori_loop (an attack)."""
  x, w, ref, ours = _both(case)
  def ascend(f):
    grad = jax.grad(lambda x, w: jnp.sum(f(x, w) ** 2), argnums=(0, 1))
    def body(_, carry):
      x, w = carry
      gx, gw = grad(x, w)
      return x + 1e-3 * jnp.sign(gx), w - 1e-4 * gw
    return jax.jit(lambda x, w: jax.lax.fori_loop(0, 3, body, (x, w)))
  for a, b in zip(ascend(ours)(x, w), ascend(ref)(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_flax_conv_with_the_hook_matches_the_default():
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  plain = nn.Conv(4, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
  hooked = nn.Conv(4, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                   conv_general_dilated=canonical_conv)
  params = plain.init(jax.random.key(2), x)
  np.testing.assert_allclose(hooked.apply(params, x), plain.apply(params, x), rtol=1e-5,
                             atol=1e-5)
  loss = lambda m: lambda p: jnp.sum(m.apply(p, x) ** 2)
  g_plain, g_hooked = jax.grad(loss(plain))(params), jax.grad(loss(hooked))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
               g_hooked, g_plain)


def test_grouped_and_string_padding_fall_through_to_lax():
  x = jax.random.normal(jax.random.key(3), (1, 6, 6, 4))
  w = jax.random.normal(jax.random.key(4), (3, 3, 2, 4))
  dn = ("NHWC", "HWIO", "NHWC")
  for padding, groups in (("SAME", 1), (((1, 1), (1, 1)), 2)):
    w_ = w if groups == 2 else jnp.concatenate([w, w], axis=2)
    np.testing.assert_allclose(
        canonical_conv(x, w_, (1, 1), padding, dimension_numbers=dn, feature_group_count=groups),
        jax.lax.conv_general_dilated(x, w_, (1, 1), padding, dimension_numbers=dn,
                                     feature_group_count=groups), rtol=1e-5, atol=1e-5)
