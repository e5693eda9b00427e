"""FLOP counter: hand-computed counts for matmuls, convs, loops, branches, remat, sharding and
a repo transformer; and the dense-matmul peak measurement."""
import math
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from mmjax import models
from mmjax.bench.flops import MatmulTimer, count_flops, dense_matmul_peak, jaxpr_flops

F32 = jnp.float32


def _sds(*shape, dtype=F32):
  return jax.ShapeDtypeStruct(shape, dtype)


def test_single_matmul_is_2bmnk():
  b, m, k, n = 3, 5, 7, 11
  counts = count_flops(lambda x, w: x @ w, _sds(b, m, k), _sds(k, n))
  assert counts["matmul"] == counts["dot"] == 2 * b * m * n * k
  assert counts["conv"] == counts["elementwise"] == 0 and counts["total"] == counts["matmul"]
  # With a batch dimension on both sides (dot_general batch dims).
  batched = count_flops(lambda x, w: jnp.einsum("bmk,bkn->bmn", x, w),
                        _sds(b, m, k), _sds(b, k, n))
  assert batched["matmul"] == 2 * b * m * n * k
  # Works on a jaxpr directly, too.
  jaxpr = jax.make_jaxpr(lambda x, w: x @ w)(_sds(b, m, k), _sds(k, n))
  assert jaxpr_flops(jaxpr)["matmul"] == 2 * b * m * n * k


def test_mlp_forward_sums_its_matmuls():
  b, sizes = 4, (6, 16, 12, 3)
  params = [(_sds(i, o), _sds(o)) for i, o in zip(sizes[:-1], sizes[1:])]

  def mlp(params, x):
    for i, (w, bias) in enumerate(params):
      x = x @ w + bias
      if i < len(params) - 1:
        x = jax.nn.relu(x)  # a custom_jvp function: the counter recurses into it
    return x

  counts = count_flops(mlp, params, _sds(b, sizes[0]))
  assert counts["matmul"] == sum(2 * b * i * o for i, o in zip(sizes[:-1], sizes[1:]))
  # One bias add per layer, one max per ReLU.
  assert counts["elementwise"] == b * (2 * 16 + 2 * 12 + 3)


def test_linear_layer_gradient_is_three_forward_matmuls():
  b, k, n = 8, 5, 3
  loss = lambda x, w: jnp.sum((x @ w) ** 2)
  forward = 2 * b * k * n
  # d/dx and d/dw: the forward matmul plus one backward matmul for each.
  both = count_flops(jax.grad(loss, argnums=(0, 1)), _sds(b, k), _sds(k, n))
  assert both["matmul"] == 3 * forward
  # Only d/dw: x's cotangent is never formed.
  assert count_flops(jax.grad(loss, argnums=1), _sds(b, k), _sds(k, n))["matmul"] == 2 * forward


def _layer(h, w):
  return jnp.tanh(h @ w)


def test_scan_counts_body_times_length():
  num_layers, b, d = 5, 4, 8
  one = count_flops(_layer, _sds(b, d), _sds(d, d))

  def scanned(h, ws):
    return lax.scan(lambda h, w: (_layer(h, w), None), h, ws)[0]

  def unrolled(h, ws):
    for i in range(num_layers):
      h = _layer(h, ws[i])
    return h

  args = (_sds(b, d), _sds(num_layers, d, d))
  scan_counts, loop_counts = count_flops(scanned, *args), count_flops(unrolled, *args)
  assert scan_counts["matmul"] == num_layers * one["matmul"] == num_layers * 2 * b * d * d
  assert scan_counts == loop_counts
  # The backward of a scan is a scan too.
  grad = count_flops(jax.grad(lambda h, ws: scanned(h, ws).sum(), argnums=(0, 1)), *args)
  assert grad["matmul"] == 3 * scan_counts["matmul"]


def test_conv_matches_hand_formula():
  b, h, w, c, f = 2, 8, 6, 4, 5
  conv = nn.Conv(f, (3, 3), padding="SAME")
  x = _sds(b, h, w, c)
  variables = jax.eval_shape(conv.init, jax.random.key(0), x)
  counts = count_flops(conv.apply, variables, x)
  assert counts["conv"] == counts["matmul"] == 2 * (b * h * w * f) * (3 * 3 * c)
  assert counts["dot"] == 0
  # Grouped and strided: each output sees a 3x3 window of in_features / groups channels.
  groups, c2, f2 = 2, 6, 4
  grouped = count_flops(
      lambda x, k: lax.conv_general_dilated(x, k, (2, 2), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=groups),
      _sds(b, h, w, c2), _sds(3, 3, c2 // groups, f2))
  assert grouped["conv"] == 2 * (b * (h // 2) * (w // 2) * f2) * (3 * 3 * c2 // groups)
  # Stride 1: the input- and kernel-gradient convs each cost one forward (also grouped,
  # where the kernel gradient uses batch_group_count).
  for groups in (1, 2):
    fn = lambda x, k, g=groups: jnp.sum(lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=g) ** 2)
    args = (_sds(b, h, w, c2), _sds(3, 3, c2 // groups, f2))
    forward = 2 * (b * h * w * f2) * (3 * 3 * c2 // groups)
    assert count_flops(fn, *args)["conv"] == forward
    assert count_flops(jax.grad(fn, argnums=(0, 1)), *args)["conv"] == 3 * forward


def test_cond_takes_the_most_expensive_branch():
  d = 8
  matmul = 2 * 4 * d * d
  args = (_sds(4, d), _sds(d, d), _sds(dtype=jnp.int32))
  fn = lambda x, w, i: lax.switch(i, [lambda x: x, lambda x: (x @ w) @ w, lambda x: x @ w], x)
  assert count_flops(fn, *args)["matmul"] == 2 * matmul
  fn = lambda x, w, p: lax.cond(p > 0, lambda x: x @ w, lambda x: x, x)
  assert count_flops(fn, *args)["matmul"] == matmul


def test_loops_with_known_and_unknown_trip_counts():
  trips, d = 6, 8
  matmul = 2 * 4 * d * d
  x, w = _sds(4, d), _sds(d, d)
  # Python-int bounds: fori_loop lowers to a scan of length upper - lower.
  jaxpr = jax.make_jaxpr(lambda x, w: lax.fori_loop(2, 2 + trips, lambda i, h: h @ w, x))(x, w)
  assert [e.primitive.name for e in jaxpr.eqns] == ["scan"]
  counts = jaxpr_flops(jaxpr)
  assert counts["matmul"] == trips * matmul and counts["unknown_trip_count_loops"] == 0
  # Concrete array bounds: a while loop whose bounds are literals; the count is recovered.
  fn = lambda x, w: lax.fori_loop(0, jnp.int32(trips), lambda i, h: h @ w, x)
  assert [e.primitive.name for e in jax.make_jaxpr(fn)(x, w).eqns] == ["while"]
  counts = count_flops(fn, x, w)
  assert counts["matmul"] == trips * matmul and counts["unknown_trip_count_loops"] == 0
  # A while_loop in the same `i < literal` form.
  fn = lambda x, w: lax.while_loop(lambda c: c[0] < trips, lambda c: (c[0] + 1, c[1] @ w),
                                   (0, x))[1]
  assert count_flops(fn, x, w)["matmul"] == trips * matmul
  # A traced bound: the body is counted once and the loop is flagged.
  fn = lambda x, w, n: lax.fori_loop(0, n, lambda i, h: h @ w, x)
  counts = count_flops(fn, x, w, _sds(dtype=jnp.int32))
  assert counts["matmul"] == matmul and counts["unknown_trip_count_loops"] == 1


def test_remat_recomputation_is_counted():
  d = 8
  matmul = 2 * 4 * d * d
  loss = lambda layer: lambda w, x: layer(layer(x, w), w).sum()
  args = (_sds(d, d), _sds(4, d))
  # 2 forward + (dx, dw) for the second layer + dw for the first.
  assert count_flops(jax.grad(loss(_layer)), *args)["matmul"] == 5 * matmul
  # Full remat: each layer's forward matmul runs again in the backward pass.
  assert count_flops(jax.grad(loss(jax.checkpoint(_layer))), *args)["matmul"] == 7 * matmul
  # Saving the dots: nothing to recompute on the matrix units.
  saved = jax.checkpoint(_layer, policy=jax.checkpoint_policies.checkpoint_dots)
  assert count_flops(jax.grad(loss(saved)), *args)["matmul"] == 5 * matmul


def test_shard_map_counts_are_global():
  # An abstract mesh: 4 shards without 4 devices. The body sees [2, d] per shard.
  mesh = jax.sharding.AbstractMesh((4,), ("d",))
  spec = jax.sharding.PartitionSpec("d")
  fn = jax.shard_map(lambda x, w: x @ w, mesh=mesh, in_specs=(spec, None), out_specs=spec)
  assert count_flops(fn, _sds(8, 16), _sds(16, 3))["matmul"] == 2 * 8 * 16 * 3


TEXT = dict(name="text_transformer", vocab_size=100, max_len=16, width=32, depth=2,
            num_heads=4, mlp_dim=64)


def _text_counts(train_step=False, **overrides):
  model = models.build_model({**TEXT, **overrides})
  batch = {"text": _sds(2, 16, dtype=jnp.int32)}
  variables = models.abstract_variables(model, batch)
  forward = lambda variables, batch: model.apply(variables, batch)["lm_logits"]
  if train_step:
    loss = lambda params, batch: jnp.mean(forward({"params": params}, batch) ** 2)
    return count_flops(jax.grad(loss), variables["params"], batch)
  return count_flops(forward, variables, batch)


def test_text_transformer_matches_analytic_count():
  b, t, d, f, v, depth = 2, 16, 32, 64, 100, 2
  per_token = (depth * (2 * 4 * d * d  # q, k, v and out projections
                        + 2 * 2 * d * f  # MLP
                        + 2 * 2 * t * d)  # scores and the weighted sum of values
               + 2 * d * v)  # tied LM head
  counts = _text_counts()
  # Exact: dot_product_attention's XLA implementation computes the full [T, T] scores even
  # when causal (the mask is applied afterwards), so the analytic count has no T/2.
  assert counts["matmul"] == b * t * per_token
  assert _text_counts(causal=True)["matmul"] == counts["matmul"]
  # Scanned layers count the same as unrolled ones (XLA's cost analysis would not).
  assert _text_counts(scan_layers=True) == counts
  # A training gradient: every matmul has an input- and a weight-gradient matmul.
  assert _text_counts(train_step=True)["matmul"] == 3 * counts["matmul"]
  # Full remat recomputes each block's forward in the backward pass, except the MLP's
  # second matmul: its output is not needed to differentiate, so it is dead code there.
  remat = _text_counts(train_step=True, remat="full", scan_layers=True)["matmul"]
  recomputed = b * t * depth * (8 * d * d + 2 * d * f + 4 * t * d)
  assert remat == 3 * counts["matmul"] + recomputed


def test_dense_matmul_peak_is_positive():
  peak = dense_matmul_peak(n=256, repeats=2)
  assert peak > 0 and math.isfinite(peak)


def test_matmul_timer_settles_then_times_at_least_min_seconds():
  timer = MatmulTimer(64, min_seconds=0.1, settle_seconds=0.2)
  assert timer.flops == 2 * 64**3
  assert len(timer.latencies(3)) == 3
  start = time.perf_counter()
  per_run = timer.block(2)
  # Untimed settling, then a timed window of many runs (each far under 0.1 s).
  assert time.perf_counter() - start >= 0.3
  assert 0 < per_run < 0.05


def test_only_floating_point_elementwise_ops_count():
  # Loop counters and index arithmetic are not floating-point work.
  assert count_flops(lambda i: i + 1, _sds(10, dtype=jnp.int32))["elementwise"] == 0
  assert count_flops(lambda x: x + 1, _sds(10))["elementwise"] == 10
  assert count_flops(lambda x: jnp.sum(x, axis=1), _sds(3, 4))["elementwise"] == 12
