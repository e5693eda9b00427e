"""The attention kernel choice: 'auto' is XLA off CUDA and cuDNN on it where it applies,
'cudnn' fails clearly where it cannot run, and a refused cuDNN call falls back to XLA;
the CPU's own kernel (heads first, causal chunks) equals jax's XLA attention."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models
from mmjax.errors import ConfigError
from mmjax.models import attention


def qkv(dtype=jnp.float32, t=6, s=6, heads=2, head_dim=8):
  rng = np.random.default_rng(0)
  make = lambda n: jnp.asarray(rng.standard_normal((2, n, heads, head_dim)), dtype)
  return make(t), make(s), make(s)


@pytest.fixture
def on_cuda(monkeypatch):
  """Pretends the default backend is a CUDA GPU (the cuDNN call itself then fails on
  this CPU, which is what the fallback test needs)."""
  monkeypatch.setattr(attention, "cuda_available", lambda: True)


def test_auto_is_xla_off_cuda():
  assert attention.implementation("auto", jnp.bfloat16, 64) == "xla"
  q, k, v = qkv()
  mask = jnp.asarray([[1, 1, 1, 0, 0, 0], [1] * 6], bool)[:, None, None, :]
  for causal in (False, True):
    want = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)
    for choice in ("auto", "xla"):
      # On a CPU both run mmjax's heads-first kernel: jax's arithmetic in another loop
      # order, equal to float32 rounding (bit-equal on some CPUs, not on others).
      np.testing.assert_allclose(
          attention.attend(q, k, v, mask, causal=causal, choice=choice), want, rtol=1e-6,
          atol=1e-6)


def test_cudnn_is_refused_with_the_reason_and_the_fix():
  with pytest.raises(ConfigError, match="not a CUDA GPU.*Use 'auto'"):
    attention.implementation("cudnn", jnp.bfloat16, 64)
  with pytest.raises(ConfigError, match="Invalid value 'flash'.*'auto', 'cudnn', 'xla'"):
    attention.implementation("flash", jnp.bfloat16, 64)
  model = models.build_model(dict(name="vit", attention="flash", width=16, depth=1,
                                  num_heads=2, mlp_dim=16))
  with pytest.raises(ConfigError, match="config.model.attention"):
    models.abstract_variables(model, {"image": jnp.zeros((1, 28, 28, 1))})


def test_auto_picks_cudnn_only_where_it_applies(on_cuda):
  del on_cuda
  assert attention.implementation("auto", jnp.bfloat16, 64) == "cudnn"
  assert attention.implementation("auto", jnp.float16, 128) == "cudnn"
  assert attention.implementation("auto", jnp.float32, 64) == "xla"
  assert attention.implementation("auto", jnp.bfloat16, 160) == "xla"
  assert attention.implementation("auto", jnp.bfloat16, 12) == "xla"
  with pytest.raises(ConfigError, match="bfloat16 or float16.*model.dtype='bfloat16'"):
    attention.implementation("cudnn", jnp.float32, 64)
  with pytest.raises(ConfigError, match="multiple of 8 and at most 128, not 12"):
    attention.implementation("cudnn", jnp.bfloat16, 12)


def test_a_refused_cudnn_call_falls_back_to_xla_under_auto_only(on_cuda):
  del on_cuda
  q, k, v = qkv(jnp.bfloat16)
  mask = jnp.ones((2, 1, 1, 6), bool)
  out = attention.attend(q, k, v, mask, causal=True, choice="auto")   # cuDNN: no GPU
  want = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True)
  np.testing.assert_array_equal(out, want)
  with pytest.raises(ConfigError, match="'cudnn' was refused.*Use 'auto'"):
    attention.attend(q, k, v, mask, causal=True, choice="cudnn")


def _assert_equal_to_jax(q, k, v, m, causal, atol=2e-6, grad_atol=2e-5):
  """attend(choice='xla') on this CPU (cpu_attention) against jax's own XLA attention:
  values and the gradients of a nonlinear loss."""
  def whole(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, mask=m, is_causal=causal,
                                        implementation="xla")

  def ours(q, k, v):
    return attention.attend(q, k, v, m, causal=causal, choice="xla")

  np.testing.assert_allclose(np.asarray(ours(q, k, v), np.float32),
                             np.asarray(whole(q, k, v), np.float32), atol=atol, rtol=1e-5)
  loss = lambda f: jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a).astype(jnp.float32))),
                                    argnums=(0, 1, 2)))
  for g_ours, g_whole in zip(loss(ours)(q, k, v), loss(whole)(q, k, v)):
    np.testing.assert_allclose(np.asarray(g_ours, np.float32), np.asarray(g_whole, np.float32),
                               atol=grad_atol, rtol=1e-4)


def test_causal_attention_on_the_cpu_runs_in_chunks_equal_to_the_whole():
  """From 128 positions (divisible by 4) causal self-attention runs in 4 query chunks;
  values and gradients equal the whole-matrix kernel, with and without padding."""
  assert [attention.causal_chunks(t, t) for t in (64, 100, 127, 128, 256)] == [1, 1, 1, 4, 4]
  assert attention.causal_chunks(128, 132) == 1            # not self-attention
  t = 128
  q, k, v = qkv(t=t, s=t)
  lengths = np.array([t, t // 3])                           # example 1 is mostly padding
  mask = jnp.asarray(np.arange(t)[None, :] < lengths[:, None])[:, None, None, :]
  # A full [B, N, T, T] mask is sliced by rows as well as columns.
  full = jnp.asarray(np.random.default_rng(1).random((2, 1, t, t)) < 0.7)
  full = full | jnp.eye(t, dtype=bool)
  for m in (None, mask, full):
    _assert_equal_to_jax(q, k, v, m, causal=True)


@pytest.mark.parametrize("t,s,causal", [(7, 7, False), (7, 7, True), (5, 9, False),
                                        (5, 9, True), (9, 5, True), (64, 64, True)])
def test_cpu_kernel_equals_jax_attention(t, s, causal):
  """Self- and cross-attention, causal or not (jax's causal mask is top-left aligned when
  T != S), unchunked lengths, with no mask, a key-padding mask and a full mask."""
  q, k, v = qkv(t=t, s=s)
  keys = jnp.asarray(np.arange(s)[None, :] < np.array([s, 2])[:, None])[:, None, None, :]
  full = jnp.asarray(np.random.default_rng(2).random((2, 2, t, s)) < 0.6)
  for m in (None, keys, full):
    _assert_equal_to_jax(q, k, v, m, causal)


def test_cpu_kernel_keeps_jax_precision_rules_in_bfloat16():
  """bf16 inputs: logits and softmax in float32, probabilities in bf16, as jax does."""
  q, k, v = qkv(jnp.bfloat16, t=128, s=128, heads=2, head_dim=16)
  out = attention.attend(q, k, v, None, causal=True, choice="xla")
  assert out.dtype == jnp.bfloat16
  _assert_equal_to_jax(q, k, v, None, True, atol=2e-2, grad_atol=1e-1)
