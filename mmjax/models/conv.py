"""Convolution whose gradients run on XLA:CPU's fast kernel inside loops.

`canonical_conv` is a drop-in for flax's `nn.Conv(conv_general_dilated=...)` hook. Its
values and gradients are those of `lax.conv_general_dilated`; only the layout of the
gradient convolutions differs on CPU (see `_conv_general_dilated`). It matters wherever a
convolution is differentiated inside a `fori_loop`/`scan`: PGD/APGD attacks, gradient
accumulation, FreeLB and free adversarial training.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero


@functools.partial(jax.custom_jvp, nondiff_argnums=tuple(range(2, 9)))
def _conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                          rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                          precision=None):
  """`lax.conv_general_dilated` whose gradients are canonical convolutions on XLA:CPU.

  XLA:CPU runs a convolution on its fast (Eigen) kernel only in canonical form (input
  [N,spatial,C], kernel [spatial,I,O], output [N,spatial,C]). JAX's gradients are not in
  that form (the input gradient reads an HWIO kernel as HWOI; the kernel gradient reads the
  input as [C,spatial,N] and the output gradient as a [spatial,N,C] kernel), and XLA:CPU's
  canonicalisation pass, which adds the transposes, visits only the entry computation. So
  inside a while loop (the `fori_loop` of a PGD/APGD attack, a `scan`) the gradient
  convolutions fell back to naive elemental loops (MnistCNN, batch 100, 2 CPU cores: a
  PGD-10 attack took 160 ms instead of 48 ms, 4 parameter-gradient steps in a fori_loop
  274 ms instead of 27 ms). On CPU the tangents below take explicitly transposed operands,
  so that JAX's transposes of them are canonical (on other backends they are JAX's own).
  Values and gradients are those of lax.conv_general_dilated.
  """
  return jax.lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, precision=precision)


def _conv_general_dilated_jvp(window_strides, padding, lhs_dilation, rhs_dilation,
                              dimension_numbers, feature_group_count, precision,
                              primals, tangents):
  lhs, rhs = primals
  lhs_dot, rhs_dot = tangents
  conv = functools.partial(
      jax.lax.conv_general_dilated, window_strides=window_strides, padding=padding,
      lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      feature_group_count=feature_group_count, precision=precision)
  dn = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  out = conv(lhs, rhs, dimension_numbers=dn)
  canonical = jax.default_backend() == "cpu"   # elsewhere: exactly JAX's own rule
  out_dot = None
  if not isinstance(lhs_dot, SymbolicZero):
    if canonical:
      o, i = dn.rhs_spec[:2]
      # The same kernel with its in/out feature dims swapped, described as such.
      swapped = dn._replace(rhs_spec=(i, o) + tuple(dn.rhs_spec[2:]))
      out_dot = conv(lhs_dot, jnp.swapaxes(rhs, o, i), dimension_numbers=swapped)
    else:
      out_dot = conv(lhs_dot, rhs, dimension_numbers=dn)
  if not isinstance(rhs_dot, SymbolicZero):
    rhs_term = (_kernel_tangent(conv, lhs, rhs_dot, dn) if canonical
                else conv(lhs, rhs_dot, dimension_numbers=dn))
    out_dot = rhs_term if out_dot is None else out_dot + rhs_term
  return out, jnp.zeros_like(out) if out_dot is None else out_dot


def _kernel_tangent(conv, lhs, rhs_dot, dn):
  """conv(lhs, rhs_dot), laid out so that its transpose (the kernel gradient) is canonical.

  JAX's kernel gradient convolves lhs read as [C, spatial, N] with the output gradient read
  as a [spatial, N, C] kernel into a [I, spatial, O] result; that is XLA:CPU's canonical
  (Eigen) form only when the arrays are in those layouts, so this tangent takes lhs and
  rhs_dot in them (explicit transposes) and returns its output from [spatial, N, C].
  """
  n = len(dn.lhs_spec) - 2
  spatial = tuple(range(1, n + 1))
  lhs_t = jnp.transpose(lhs, (dn.lhs_spec[1],) + tuple(dn.lhs_spec[2:]) + (dn.lhs_spec[0],))
  rhs_t = jnp.transpose(rhs_dot, (dn.rhs_spec[1],) + tuple(dn.rhs_spec[2:]) + (dn.rhs_spec[0],))
  t_dn = jax.lax.ConvDimensionNumbers(lhs_spec=(n + 1, 0) + spatial,
                                      rhs_spec=(n + 1, 0) + spatial,
                                      out_spec=(n, n + 1) + tuple(range(n)))
  t = conv(lhs_t, rhs_t, dimension_numbers=t_dn)       # [spatial..., N, C]
  src = {dn.out_spec[0]: n, dn.out_spec[1]: n + 1}
  src.update({d: k for k, d in enumerate(dn.out_spec[2:])})
  return jnp.transpose(t, tuple(src[a] for a in range(n + 2)))


# Symbolic zeros: no convolution for the tangent of an input that is not differentiated.
_conv_general_dilated.defjvp(_conv_general_dilated_jvp, symbolic_zeros=True)


def canonical_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                   dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """flax's `nn.Conv(conv_general_dilated=...)` hook with CPU-canonical gradients.

  Same signature and result as `lax.conv_general_dilated`; grouped convolutions and string
  paddings go straight to it. Static arguments are made hashable for the custom JVP.
  """
  if kwargs or feature_group_count != 1 or isinstance(padding, str):
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision, **kwargs)
  tup = lambda v: None if v is None else tuple(v)
  dn = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  return _conv_general_dilated(
      lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding), tup(lhs_dilation),
      tup(rhs_dilation), dn, feature_group_count, precision)
