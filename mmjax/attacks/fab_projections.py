"""Minimal-norm steps onto a hyperplane inside a box: the linearised subproblem of FAB.

For rows n = 1..N (N points, D coordinates each) `hyperplane_step` solves

    d* = argmin ||d||_p   s.t.   w . d + f = 0,   lo <= d <= hi      (lo <= 0 <= hi),

with p = inf or 2: the shortest move from a point onto the hyperplane {z : w . (z - point)
+ f = 0} that stays in the box [point + lo, point + hi]. If the box cannot reach the
hyperplane, d* is the box corner that gets closest to it (the most progress possible), as in
Croce & Hein's reference code.

Only coordinates that help move: with s_i = sign(-f) sign(w_i), an optimal d has d_i = s_i m_i,
m_i in [0, room_i] (room_i = hi_i if s_i > 0 else -lo_i). Both norms give a one-parameter
family m_i(lam) = min(lam * k_i, room_i), with k_i = 1 (linf: the same magnitude everywhere)
or |w_i| (l2: d proportional to w, by the KKT conditions), and the progress
progress(lam) = sum_i |w_i| m_i(lam) is piecewise linear, nondecreasing and concave in lam.
Sorting the kinks lam_i = room_i / k_i gives progress at every kink from prefix sums of the
saturated caps |w_i| room_i and suffix sums of the slopes |w_i| k_i; the first kink whose
progress reaches |f| brackets the exact lam. Cost O(D log D) per row, no iteration.
"""
import jax.numpy as jnp

# Stands in for "no bound": large enough never to bind, small enough that |w| * BIG and
# their sums stay finite in float32.
BIG = 1e20


def hyperplane_step(w, f, lo, hi, norm):
  """Minimal-`norm` d with w . d + f = 0 and lo <= d <= hi (or the closest box corner).

  Args:
    w: [N,D] hyperplane normals. f: [N] the affine function's value at the point (d = 0).
    lo, hi: [N,D] (or broadcastable) step bounds, lo <= 0 <= hi; use -BIG/BIG for none.
    norm: 'linf' or 'l2'.
  Returns:
    d: [N,D] float32.
  """
  if norm not in ("linf", "l2"):
    raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}.")
  w = w.astype(jnp.float32)
  f = f.astype(jnp.float32)
  lo = jnp.broadcast_to(jnp.asarray(lo, jnp.float32), w.shape)
  hi = jnp.broadcast_to(jnp.asarray(hi, jnp.float32), w.shape)
  target = jnp.abs(f)                                   # progress needed, [N]
  helpful = -jnp.sign(f)[:, None] * jnp.sign(w)         # +1/-1 per coordinate, 0: useless
  room = jnp.where(helpful > 0, hi, jnp.where(helpful < 0, -lo, 0.0))
  room = jnp.clip(room, 0.0, BIG)                       # a point a hair outside: no room
  abs_w = jnp.abs(w)
  moves = abs_w > 0
  rate = jnp.ones_like(w) if norm == "linf" else abs_w  # m_i = min(lam * rate_i, room_i)

  kink = jnp.where(moves, room / jnp.where(moves, rate, 1.0), 0.0)   # lam where i saturates
  slope = jnp.where(moves, abs_w * rate, 0.0)           # d progress / d lam while unsaturated
  cap = jnp.where(moves, abs_w * room, 0.0)             # progress once saturated

  order = jnp.argsort(kink, axis=-1)
  kink_s = jnp.take_along_axis(kink, order, axis=-1)
  slope_s = jnp.take_along_axis(slope, order, axis=-1)
  cap_s = jnp.take_along_axis(cap, order, axis=-1)
  zeros = jnp.zeros_like(target)[:, None]
  # Exclusive prefix of caps (saturated before kink k) and suffix of slopes (still free at
  # kink k, itself included). Suffix sums by a reversed cumsum, not total - prefix, so a
  # small tail is not lost to cancellation.
  caps_before = jnp.concatenate([zeros, jnp.cumsum(cap_s, axis=-1)], axis=-1)        # [N,D+1]
  slopes_from = jnp.concatenate(
      [jnp.cumsum(slope_s[:, ::-1], axis=-1)[:, ::-1], zeros], axis=-1)            # [N,D+1]
  progress_at_kink = caps_before[:, :-1] + jnp.where(
      slopes_from[:, :-1] > 0, kink_s * slopes_from[:, :-1], 0.0)
  # Kinks passed before reaching the target: those coordinates sit at their room.
  n_saturated = jnp.sum(progress_at_kink < target[:, None], axis=-1)
  done = jnp.take_along_axis(caps_before, n_saturated[:, None], axis=-1)[:, 0]
  free_slope = jnp.take_along_axis(slopes_from, n_saturated[:, None], axis=-1)[:, 0]
  feasible = (n_saturated < w.shape[-1]) & (free_slope > 0)
  lam = jnp.where(feasible, (target - done) / jnp.where(feasible, free_slope, 1.0), jnp.inf)
  lam = jnp.maximum(lam, 0.0)[:, None]
  magnitude = jnp.where(moves, jnp.minimum(jnp.where(moves, lam * rate, 0.0), room), 0.0)
  return helpful * magnitude
