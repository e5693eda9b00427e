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
progress(lam) = sum_i |w_i| m_i(lam) is piecewise linear, nondecreasing and concave in lam:
coordinate i saturates at its kink lam_i = room_i / k_i, moving progress by the slope
|w_i| k_i before and holding its cap |w_i| room_i after. The exact lam* (progress = |f|) is
(|f| - caps of the kinks below lam*) / (slopes of the others).

Solved without sorting the kinks (sorting 784 kinks per row cost ten times the rest on CPU)
by variable fixing, i.e. Newton's method on the concave progress from lam = 0: with the kinks
<= lam saturated, lam' = (|f| - their caps) / (the other slopes). Its tangent lies above
progress, so lam' <= lam*; the saturated set only grows, and once lam' passes no new kink,
lam' is exactly lam*. Each step is one elementwise pass over [N,D]; on FAB's problems every
row settles within a handful. Rows still moving after `_NEWTON_STEPS` (a pathological chain
of kinks) are finished by an exact bisection over the float32 values of lam (31 passes).
"""
import jax
import jax.numpy as jnp

# Stands in for "no bound": large enough never to bind, small enough that |w| * BIG and
# their sums stay finite in float32.
BIG = 1e20
_NEWTON_STEPS = 12     # FAB's rows settle in <= 4; the rare rest go to the bisection
# The bisection searches the bit patterns of the finite float32s >= 0, which sort like their
# values: 0 .. 0x7f7fffff (the largest float32); 0x7f800000 (the bits of inf) stands for
# "progress never reaches |f|". 31 halvings shrink that range of 2^31 - 2^23 + 1 to one.
_NONE = 0x7f800000
_BISECTIONS = 31


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

  def split(lam):
    """(#saturated, their caps, the free slopes) with the kinks <= lam [N] saturated."""
    saturated = kink <= lam[:, None]
    return (jnp.sum(saturated, axis=-1, dtype=jnp.int32),
            jnp.sum(jnp.where(saturated, cap, 0.0), axis=-1),
            jnp.sum(jnp.where(saturated, 0.0, slope), axis=-1))

  def newton(done, free):
    """The root of the linear piece through the saturated set; inf where nothing is free
    (every coordinate saturated short of |f|: the box corner)."""
    return jnp.where(free > 0, (target - done) / jnp.where(free > 0, free, 1.0), jnp.inf)

  def keep_going(state):
    step, _, _, _, _, settled = state
    return (step < _NEWTON_STEPS) & ~jnp.all(settled)

  def newton_step(state):
    step, lam, count, done, free, settled = state
    new_lam = jnp.maximum(newton(done, free), lam)     # monotone also in float
    new_count, new_done, new_free = split(new_lam)
    # No kink passed: new_lam is exact. (A NaN |f| settles at once, as garbage in.)
    now = settled | (new_count == count) | jnp.isnan(new_lam)
    keep = lambda old, new: jnp.where(settled, old, new)
    return (step + 1, keep(lam, new_lam), keep(count, new_count), keep(done, new_done),
            keep(free, new_free), now)

  n = target.shape[0]
  zero = jnp.zeros((n,), jnp.float32)
  _, lam, _, _, _, settled = jax.lax.while_loop(
      keep_going, newton_step, (0, zero) + split(zero) + (jnp.zeros((n,), bool),))
  lam = jax.lax.cond(jnp.all(settled), lambda: lam,
                     lambda: jnp.where(settled, lam, _bisection(target, kink, slope, cap)))
  lam = jnp.maximum(lam, 0.0)[:, None]
  magnitude = jnp.where(moves, jnp.minimum(jnp.where(moves, lam * rate, 0.0), room), 0.0)
  return helpful * magnitude


def _bisection(target, kink, slope, cap):
  """lam* per row by bisection: the smallest float32 lam >= 0 with progress(lam) >= |f|
  (progress(lam) = sum_i min(lam slope_i, cap_i) is nondecreasing also in floating point),
  then the exact lam on the linear piece through the kinks below it; inf: unreachable."""
  def reaches(bits):
    lam = jax.lax.bitcast_convert_type(bits, jnp.float32)[:, None]
    return jnp.sum(jnp.minimum(lam * slope, cap), axis=-1) >= target

  def halve(_, bracket):
    low, high = bracket          # lam* in [low, high] (as bits); high = _NONE: not reached
    mid = low + (high - low) // 2
    reached = reaches(mid)
    return jnp.where(reached, low, mid + 1), jnp.where(reached, mid, high)

  n = target.shape[0]
  _, high = jax.lax.fori_loop(
      0, _BISECTIONS, halve,
      (jnp.zeros((n,), jnp.int32), jnp.full((n,), _NONE, jnp.int32)))
  saturated = kink < jax.lax.bitcast_convert_type(high, jnp.float32)[:, None]
  done = jnp.sum(jnp.where(saturated, cap, 0.0), axis=-1)
  free = jnp.sum(jnp.where(saturated, 0.0, slope), axis=-1)
  feasible = (high != _NONE) & (free > 0)
  return jnp.where(feasible, (target - done) / jnp.where(feasible, free, 1.0), jnp.inf)
