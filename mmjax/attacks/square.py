"""Square Attack (Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box
adversarial attack via random search"), as AutoAttack runs it (p_init 0.8, 5000 queries, the
p schedule not rescaled to the query budget), as a pure `jax.lax.while_loop`.

Score-based random search on a loss to maximise (the margin max_{j!=y} z_j - z_y: an example
is fooled iff loss > 0). Each float leaf is viewed as [B,H,W,C]: [B,S] -> [B,1,S,1] (1-D
windows along S), [B,H,W] -> [B,H,W,1], [B,H,W,C] as is, higher ranks flatten dims 3.. into C.
  init   linf: x0 + eps * (+-1 per example, column and channel): vertical stripes.
         l2:   a grid of ~5x5 tiles, each the two-lobed "eta" pattern (nested squares with
               weights 1/(k+1)^2, + on one half, - on the other) times +-1 per channel,
               scaled to l2 norm eps.
  step i a window of side s covering a fraction p_i of the H*W positions (s = round(sqrt(p_i
         H W)); 1-D: round(p_i S); capped at H-1, W-1); p_i = p_init / 2^k, halved after
         iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000.
         linf: the window is set to x0 +- eps (one sign per channel).
         l2:   window 1 gets eta * (+-1 per channel) plus its old content, rescaled to take
               the unused budget and the mass of a second window, which is zeroed; the
               whole perturbation is rescaled to l2 norm eps.
  Every leaf changes at once, the loss is evaluated once, and an example keeps the proposal
  iff its loss increases. Fooled examples stop changing. `queries` counts forward passes as
  the reference does: the init plus queries-1 proposals (plus one pass on the clean point).
Deliberate differences: windows and signs are drawn per example (the reference shares a
window position, and for linf its signs, across the batch), so an example's randomness does
not depend on its batch; window positions are uniform over all valid offsets (the reference's
`random_int(0, h - s)` never reaches the last one); the eta split axis is drawn per example.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.attacks import norms as N
from mmjax.attacks.core import keep_best
from mmjax.errors import ConfigError

P_THRESHOLDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_TINY = 1e-12


def p_schedule(it, p_init=0.8, n_queries=None):
  """Fraction of positions a window covers at iteration `it` (the reference's p_selection).

  n_queries given: the reference's resc_schedule=True (it rescaled to a 10000-query budget);
  None: AutoAttack's setting (resc_schedule=False)."""
  if n_queries is not None:
    it = int(it / n_queries * 10000)
  return p_init / 2 ** sum(it > t for t in P_THRESHOLDS)


def canonical_shape(shape):
  """A leaf's [B,...] shape viewed as (B, H, W, C)."""
  if len(shape) <= 2:
    return (shape[0], 1, math.prod(shape[1:]), 1)
  return (shape[0], shape[1], shape[2], math.prod(shape[3:]))


def window_sides(p, h, w, c, norm):
  """(rows, cols) of the window at fraction p; the reference's square side for H, W > 1."""
  n_features = h * w * c
  spatial = [d for d in (h, w) if d > 1]
  # The reference's arithmetic, sqrt(p * n_features / c), so that its rounding is reproduced.
  area = p * n_features / c
  s = round(math.sqrt(area) if len(spatial) == 2 else area)
  s = max(s, 3 if norm == "l2" else 1)
  if norm == "l2" and s % 2 == 0:
    s += 1
  side = lambda d: 1 if d == 1 else min(s, d - 1)   # < d: at least two window positions
  return side(h), side(w)


def _nested_squares(a, b):
  """The reference's eta_rectangles: sum_k 1/(k+1)^2 on the centred (2k+1)-squares (clipped
  to a x b), unit l2."""
  if a == 0 or b == 0:
    return np.zeros((a, b))
  ci, cj = a // 2, b // 2
  ring = np.maximum(np.abs(np.arange(a)[:, None] - ci), np.abs(np.arange(b)[None, :] - cj))
  weights = 1.0 / (np.arange(max(ci, cj) + 1) + 1.0) ** 2
  out = np.cumsum(weights[::-1])[::-1][ring]   # a cell in ring d lies in the squares k >= d
  return out / np.sqrt(np.sum(out ** 2))


def eta(a, b, axis):
  """The reference's eta for an a x b window: + nested squares on the first half along
  `axis`, - on the second; unit l2. axis=1 is the reference's transposed eta."""
  if axis == 1:
    return eta(b, a, 0).T
  out = np.concatenate([_nested_squares(a // 2, b), -_nested_squares(a - a // 2, b)], 0)
  return out / np.sqrt(np.sum(out ** 2))


def _split_axis(coin, rows, cols):
  """The eta axis: the coin (bool) when both sides can be split, else the one that can."""
  return jnp.where((rows >= 2) & (cols >= 2), coin, rows < 2).astype(jnp.int32)


def _signs(u):
  """U[0,1) -> +-1 with equal probability."""
  return jnp.where(u < 0.5, -1.0, 1.0)


class _Leaf:
  """One float leaf viewed as [B,H,W,C] (float32), with its static window geometry. Its
  randomness comes in as U[0,1) draws [B, init_draws] and [B, step_draws]."""

  def __init__(self, x0, spec, p_init, n_segments):
    self.shape, self.dtype, self.norm = x0.shape, x0.dtype, spec.norm
    b, h, w, c = self.b, self.h, self.w, self.c = canonical_shape(x0.shape)
    self.x0 = self.canon(x0)
    eps = jnp.broadcast_to(jnp.asarray(spec.eps, jnp.float32), (b,))   # scalar or [B]
    self.eps = N.per_example(eps, self.x0)
    sides = [window_sides(p_init / 2 ** k, h, w, c, self.norm) for k in range(n_segments)]
    self.sides = jnp.asarray(sides, jnp.int32)                      # [segments, 2]
    self.step_draws = 5 + c        # 2 window corners, an eta axis, a sign per channel
    if self.norm == "linf":
      self.init_draws = w * c      # a sign per column and channel
      return
    # eta of every window size this run reaches, zero-padded: [segments, axis, rows, cols].
    table = np.zeros((n_segments, 2) + tuple(np.max(sides, axis=0)))
    for k, (rows, cols) in enumerate(sides):
      for axis in (0, 1):
        table[k, axis, :rows, :cols] = eta(rows, cols, axis)
    self.eta_table = jnp.asarray(table, jnp.float32)
    # Init tiles of H//5 x W//5, centred like the reference's (identical for H, W >= 25).
    th, tw = self.tile_sides = max(h // 5, 1), max(w // 5, 1)
    nh, nw = h // th, w // tw
    top, left = (h - nh * th) // 2, (w - nw * tw) // 2
    self.tile = -np.ones((h, w), np.int32)      # tile index of each position, -1: none
    self.tile_eta = np.zeros((2, h, w))
    for i in range(nh):
      for j in range(nw):
        r, c0 = top + i * th, left + j * tw
        self.tile[r:r + th, c0:c0 + tw] = i * nw + j
        self.tile_eta[:, r:r + th, c0:c0 + tw] = eta(th, tw, 0), eta(th, tw, 1)
    self.n_tiles = nh * nw
    self.init_draws = self.n_tiles * (1 + c)    # per tile: an eta axis, a sign per channel

  def canon(self, x):
    return x.reshape(canonical_shape(x.shape)).astype(jnp.float32)

  def back(self, x):
    return x.reshape(self.shape).astype(self.dtype)

  def _window(self, u_row, u_col, rows, cols):
    """A uniformly placed rows x cols window per example (u_*: [B]) -> (mask [B,H,W,1], the
    row [B,H] and column [B,W] indices relative to its corner)."""
    offset = lambda u, n: jnp.minimum(jnp.floor(u * n).astype(jnp.int32), n - 1)[:, None]
    rel_r = jnp.arange(self.h)[None] - offset(u_row, self.h - rows + 1)
    rel_c = jnp.arange(self.w)[None] - offset(u_col, self.w - cols + 1)
    in_rows, in_cols = (rel_r >= 0) & (rel_r < rows), (rel_c >= 0) & (rel_c < cols)
    return (in_rows[:, :, None] & in_cols[:, None])[..., None], rel_r, rel_c

  def _scaled_to_eps(self, delta):
    return self.x0 + self.eps * delta / (_TINY + N.per_example(N.l2_norm(delta), delta))

  def init(self, u):
    if self.norm == "linf":
      return self.x0 + self.eps * _signs(u).reshape(self.b, 1, self.w, self.c)
    tile = np.maximum(self.tile, 0)
    axis = _split_axis(u[:, :self.n_tiles] < 0.5, *self.tile_sides)[:, tile]      # [B,H,W]
    signs = _signs(u[:, self.n_tiles:]).reshape(self.b, self.n_tiles, self.c)[:, tile]
    values = jnp.where(axis == 1, self.tile_eta[1], self.tile_eta[0]) * (self.tile >= 0)
    return self._scaled_to_eps(values[..., None] * signs)

  def step(self, u, segment, x_best):
    rows, cols = self.sides[segment, 0], self.sides[segment, 1]
    win, rel_r, rel_c = self._window(u[:, 0], u[:, 1], rows, cols)
    signs = _signs(u[:, 5:])[:, None, None, :]
    if self.norm == "linf":
      return jnp.where(win, self.x0 + self.eps * signs, x_best)
    # l2: window `win` takes a fresh eta lobe on top of its old (normalised) content; window
    # `gone` is zeroed, and its mass plus the unused budget go to `win` (the reference's
    # per-channel target norm^2: (eps^2 - ||delta||^2)/C + ||delta on both windows||^2).
    gone = self._window(u[:, 2], u[:, 3], rows, cols)[0]
    axis = _split_axis(u[:, 4] < 0.5, rows, cols)
    table = self.eta_table[segment]
    pattern = table[axis[:, None, None],
                    jnp.clip(rel_r, 0, table.shape[1] - 1)[:, :, None],
                    jnp.clip(rel_c, 0, table.shape[2] - 1)[:, None, :]][..., None]
    delta = x_best - self.x0
    sq_sum = lambda v, axes: jnp.sum(jnp.square(v), axis=axes, keepdims=True)
    old = jnp.where(win, delta, 0.0)
    new = jnp.where(win, pattern * signs, 0.0) + old / (_TINY + jnp.sqrt(sq_sum(old, (1, 2))))
    budget = (jnp.maximum(jnp.square(self.eps) - sq_sum(delta, (1, 2, 3)), 0.0) / self.c
              + sq_sum(jnp.where(win | gone, delta, 0.0), (1, 2, 3)))
    new = new / (_TINY + jnp.sqrt(sq_sum(new, (1, 2)))) * jnp.sqrt(budget)
    return self._scaled_to_eps(jnp.where(win, new, jnp.where(gone, 0.0, delta)))


def square_run(prob, key, *, queries: int, p_init: float = 0.8):
  """Square Attack on `prob` (its loss: e.g. the margin, fooled iff > 0).

  key: one PRNG key or per-example keys ([B,2] raw / [B] typed). queries: forward passes per
  example (init + queries-1 proposals; static). -> (best_xs: list of arrays like prob.x0,
  best_loss [B] float32): per example the higher-loss of the clean point and the search's.
  """
  if not isinstance(queries, int) or queries < 1:
    raise ConfigError(f"Square needs queries to be a positive int, got {queries!r}.")
  n_iters = queries - 1
  n_segments = 1 + sum(n_iters - 1 > t for t in P_THRESHOLDS)
  leaves = [_Leaf(x0, spec, p_init, n_segments) for x0, spec in zip(prob.x0, prob.specs)]

  def propose(k, draws, make):
    """make(leaf, u, i) -> leaf i's proposal [B,H,W,C]. One RNG draw for all leaves: each
    threefry call costs seconds of XLA compile time."""
    u = N._sample(lambda kk, s: jax.random.uniform(kk, s, jnp.float32), k,
                  (prob.batch, sum(draws)))
    us = jnp.split(u, np.cumsum(draws)[:-1].tolist(), axis=1)
    return prob.project([leaf.back(make(leaf, u, i))
                         for i, (leaf, u) in enumerate(zip(leaves, us))])

  clean_loss = prob.loss(prob.x0)
  xs = propose(N.fold_in(key, 0), [leaf.init_draws for leaf in leaves],
               lambda leaf, u, i: leaf.init(u))
  loss = prob.loss(xs)

  # Like AutoAttack, examples fooled at the clean point are not attacked.
  searching = lambda loss: (loss <= 0) & (clean_loss <= 0)
  thresholds = jnp.asarray(P_THRESHOLDS, jnp.int32)

  def body(state):
    it, xs, loss = state
    segment = jnp.minimum(jnp.sum(it > thresholds), n_segments - 1)
    cand = propose(N.fold_in(key, it + 1), [leaf.step_draws for leaf in leaves],
                   lambda leaf, u, i: leaf.step(u, segment, leaf.canon(xs[i])))
    cand_loss = prob.loss(cand)
    accept = searching(loss) & (cand_loss > loss)   # NaN never accepted
    xs = [jnp.where(N.per_example(accept, x), c, x) for x, c in zip(xs, cand)]
    return it + 1, xs, jnp.where(accept, cand_loss, loss)

  cond = lambda state: (state[0] < n_iters) & jnp.any(searching(state[2]))
  _, xs, loss = jax.lax.while_loop(cond, body, (jnp.int32(0), xs, loss))
  # The reference leaves unfooled examples at the clean point; keep whichever is stronger.
  return keep_best(xs, loss, list(prob.x0), clean_loss)
