"""Attention masking, transformer stacks (scan, remat), dtypes."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.errors import ConfigError
from mmjax.models import layers, param_count
from mmjax.models.transformer import Encoder

KEY = jax.random.key(0)
X = jax.random.normal(jax.random.key(1), (2, 6, 8))


@functools.partial(jax.jit, static_argnames=("module", "method", "train"))
def _apply(module, variables, *args, rngs=None, method="__call__", train=None):
  """Jitted apply; the static module/method/train make the compile cache reusable."""
  kw = {} if train is None else {"train": train}
  return module.apply(variables, *args, rngs=rngs, method=method, **kw)


def _host_variables(module, *args, seed=0):
  """Generic variables drawn on the host (numpy) in the shapes `module.init` would make.

  Compiling real initialisers (a threefry program per parameter) costs seconds on CPU;
  these tests are about the forward function, and real init is exercised by the models.
  """
  abstract = jax.eval_shape(lambda *a: nn.meta.unbox(module.init(KEY, *a)), *args)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if "scale" in jax.tree_util.keystr(path):
      return jnp.asarray(1.0 + 0.1 * rng.normal(size=leaf.shape), leaf.dtype)
    fan_in = np.prod(leaf.shape[-3:-1]) if leaf.ndim > 2 else leaf.shape[0]
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)
  return jax.tree_util.tree_map_with_path(draw, abstract)


def _init_apply(module, *args, **kwargs):
  """Jitted init (one compile beats op-by-op dispatch), then `_apply`."""
  variables = jax.jit(lambda *a: nn.meta.unbox(module.init(KEY, *a, **kwargs)))(*args)
  return variables, _apply(module, variables, *args, **kwargs)


@pytest.fixture(scope="module")
def attention():
  """Variables shared by the causal and bidirectional layer (causal adds no parameters)."""
  variables, _ = _init_apply(layers.MultiHeadAttention(num_heads=2), X)
  return variables


def test_attention_ignores_padded_keys(attention):
  mask = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]])
  attn = layers.MultiHeadAttention(num_heads=2)
  out = _apply(attn, attention, X, mask)
  assert out.shape == X.shape
  x2 = X.at[:, 5].set(100.0).at[0, 4].set(-7.0)  # change only padded positions
  out2 = _apply(attn, attention, x2, mask)
  np.testing.assert_allclose(out2[0, :4], out[0, :4], atol=1e-5)
  np.testing.assert_allclose(out2[1, :5], out[1, :5], atol=1e-5)
  # Without the mask the same change does reach the real positions.
  assert not np.allclose(_apply(attn, attention, x2)[0, :4],
                         _apply(attn, attention, X)[0, :4], atol=1e-3)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_causal_mask(attention, causal):
  attn = layers.MultiHeadAttention(num_heads=2, causal=causal)
  out = _apply(attn, attention, X)
  out2 = _apply(attn, attention, X.at[:, 3].add(5.0))
  past_same = np.allclose(out2[:, :3], out[:, :3], atol=1e-5)
  assert past_same == causal
  assert not np.allclose(out2[:, 3:], out[:, 3:], atol=1e-3)


def test_heads_must_divide_width():
  with pytest.raises(ConfigError, match="num_heads"):
    layers.MultiHeadAttention(num_heads=3).init(KEY, X)


def _encoder(**kw):
  return Encoder(**{**dict(depth=3, num_heads=2, mlp_dim=16), **kw})


def test_scan_and_loop_have_same_params():
  loop, scan = _encoder(scan_layers=False), _encoder(scan_layers=True)
  loop_vars, scan_vars = _host_variables(loop, X), _host_variables(scan, X)
  assert param_count(loop_vars) == param_count(scan_vars)
  assert set(loop_vars["params"]) == {"block_0", "block_1", "block_2", "ln_final"}
  stacked = scan_vars["params"]["blocks"]["attn"]["query"]["kernel"]
  assert stacked.shape == (3, 8, 2, 4)
  # The loop's weights restacked into the scan layout give the same function.
  restacked = {"blocks": jax.tree_util.tree_map(
      lambda *a: jnp.stack(a), *[loop_vars["params"][f"block_{i}"] for i in range(3)]),
      "ln_final": loop_vars["params"]["ln_final"]}
  loop_out = _apply(loop, loop_vars, X)
  assert loop_out.shape == X.shape
  np.testing.assert_allclose(_apply(scan, {"params": restacked}, X), loop_out, atol=1e-5)


def test_remat_matches_no_remat():
  base = _encoder(scan_layers=True)
  variables = _host_variables(base, X)
  out = _apply(base, variables, X)

  def grads(module):
    loss = lambda p: jnp.sum(module.apply({"params": p}, X) ** 2)
    return jax.jit(jax.grad(loss))(variables["params"])
  for policy in ("full", "dots"):
    remat = _encoder(scan_layers=True, remat=policy)
    np.testing.assert_allclose(_apply(remat, variables, X), out, atol=1e-6)
  # Gradients too (remat only changes what is saved for the backward pass).
  remat = _encoder(scan_layers=True, remat="full")
  for a, b in zip(jax.tree_util.tree_leaves(grads(base)),
                  jax.tree_util.tree_leaves(grads(remat))):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  loop_remat = _encoder(remat="full")  # remat without scan
  assert _apply(loop_remat, _host_variables(loop_remat, X), X).shape == X.shape


def test_dropout_in_stack():
  enc = _encoder(dropout=0.5, scan_layers=True)
  variables = _host_variables(enc, X)
  a = _apply(enc, variables, X, train=False)
  np.testing.assert_array_equal(a, _apply(enc, variables, X, train=False))
  b = _apply(enc, variables, X, train=True, rngs={"dropout": jax.random.key(1)})
  c = _apply(enc, variables, X, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(a, b) and not np.allclose(b, c)


def test_bfloat16_compute_keeps_float32_params():
  enc = _encoder(dtype=layers.compute_dtype("bfloat16"), scan_layers=True)
  abstract = jax.eval_shape(lambda x: nn.meta.unbox(enc.init(KEY, x)), X)
  assert {x.dtype for x in jax.tree_util.tree_leaves(abstract)} == {jnp.dtype("float32")}
  assert jax.eval_shape(lambda v: enc.apply(v, X), abstract).dtype == jnp.bfloat16
  with pytest.raises(ConfigError, match="dtype"):
    layers.compute_dtype("float16")


def test_patch_embed_and_embeddings():
  images = jnp.ones((2, 8, 12, 3))
  patch_embed = layers.PatchEmbed(patch_size=4, width=5)
  tokens = _apply(patch_embed, _host_variables(patch_embed, images), images)
  assert tokens.shape == (2, 6, 5)
  ids = jnp.array([[1, 2, 0]])
  embed = layers.TokenEmbed(vocab_size=7, width=4)
  emb_vars = _host_variables(embed, ids)
  emb = _apply(embed, emb_vars, ids)
  assert emb.shape == (1, 3, 4)
  table = emb_vars["params"]["embedding"]
  np.testing.assert_allclose(emb[0, 2], table[0])
  logits = _apply(layers.TokenEmbed(7, 4), emb_vars, emb, method="attend")
  np.testing.assert_allclose(logits, emb @ table.T, atol=1e-5)
