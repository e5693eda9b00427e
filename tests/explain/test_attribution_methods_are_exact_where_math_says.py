"""Attribution methods against what the math says: gradient saliency of a linear model is
its weights, integrated gradients of a linear model is (x - x')·w exactly, completeness
holds on a small MLP, faithful maps delete faster than random ones; bad arguments are
refused."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.errors import ConfigError
from mmjax.explain import faithfulness, methods


@pytest.fixture(scope="module")
def linear():
  w = jax.random.normal(jax.random.PRNGKey(0), (12, 3))
  x = jax.random.normal(jax.random.PRNGKey(1), (5, 12))
  return (lambda z: z @ w), w, x, jnp.array([0, 1, 2, 0, 1])


def test_gradient_and_smoothgrad_of_a_linear_model_are_its_weights(linear):
  f, w, x, t = linear
  np.testing.assert_allclose(methods.gradient(f, x, t), w.T[t], rtol=1e-6)
  np.testing.assert_allclose(methods.gradient_x_input(f, x, t), x * w.T[t], rtol=1e-6)
  np.testing.assert_allclose(methods.smoothgrad(f, x, t, jax.random.PRNGKey(2), samples=4),
                             w.T[t], rtol=1e-5)


def test_integrated_gradients_of_a_linear_model_is_exact(linear):
  f, w, x, t = linear
  baseline = jax.random.normal(jax.random.PRNGKey(3), x.shape)
  ig = methods.integrated_gradients(f, x, t, baseline=baseline, steps=3)
  np.testing.assert_allclose(ig, (x - baseline) * w.T[t], rtol=1e-5, atol=1e-6)
  assert float(methods.completeness_gap(f, x, t, ig, baseline).max()) < 1e-5


def test_completeness_on_a_small_mlp_within_one_percent_at_64_steps():
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(4), 3)
  w1, w2 = jax.random.normal(k1, (20, 32)) / 4, jax.random.normal(k2, (32, 4)) / 4
  f = lambda z: jnp.tanh(z @ w1) @ w2
  x = jax.random.normal(k3, (8, 20))
  t = jnp.argmax(f(x), -1)
  ig = methods.integrated_gradients(f, x, t, steps=64)
  gap = methods.completeness_gap(f, x, t, ig, jnp.zeros_like(x))
  assert float(gap.max()) < 0.01, gap


def test_exact_maps_delete_faster_than_random_ones():
  """A linear 'image' model whose evidence is in a few pixels: deleting by its exact
  attributions drops the target probability sooner than deleting at random."""
  rng = np.random.default_rng(0)
  w = np.zeros((8, 8, 1, 2), np.float32)
  w[2:4, 2:4, 0, 0], w[5:7, 5:7, 0, 1] = 3.0, 3.0
  f = lambda z: jnp.einsum("bhwc,hwck->bk", z, w)
  x = rng.random((6, 8, 8, 1)).astype(np.float32)
  t = np.asarray(jnp.argmax(f(x), -1))
  attr = np.asarray(methods.gradient_x_input(f, jnp.asarray(x), t))
  base = np.zeros_like(x)
  exact = faithfulness.curves(f, x, t, attr, baseline=base, steps=8)
  rand = faithfulness.curves(f, x, t, attr, baseline=base, steps=8, random_seed=0)
  assert faithfulness.auc(exact["deletion"]) < faithfulness.auc(rand["deletion"])
  assert faithfulness.auc(exact["insertion"]) > faithfulness.auc(rand["insertion"])
  assert faithfulness.auc(np.ones(5)) == 1.0


def test_baselines_and_refusals():
  x = jnp.ones((2, 6, 6, 3))
  assert methods.make_baseline("blur", x).shape == x.shape
  assert float(methods.make_baseline("zeros", x).sum()) == 0.0
  f = lambda z: z.reshape(2, -1)[:, :3]
  with pytest.raises(ConfigError, match="baseline has shape"):
    methods.integrated_gradients(f, x, jnp.array([0, 1]), baseline=jnp.zeros((2, 6)))
  with pytest.raises(ConfigError, match="steps=0 must be a positive integer"):
    methods.integrated_gradients(f, x, jnp.array([0, 1]), steps=0)
  with pytest.raises(ConfigError, match="Unknown attribution method 'saliency'"):
    methods.attribute("saliency", f, x, jnp.array([0, 1]))
  with pytest.raises(ConfigError, match="'blur' needs images"):
    methods.make_baseline("blur", jnp.ones((2, 5)))


def test_spearman_equals_scipys_and_randomisation_cascades_from_the_top():
  from scipy import stats
  rng = np.random.default_rng(0)
  a, b = rng.random((3, 4, 4, 1)), rng.random((3, 4, 4, 1))
  b[0] = a[0] * 2   # same ranks
  expected = np.mean([stats.spearmanr(a[i].ravel(), b[i].ravel())[0] for i in range(3)])
  assert faithfulness.spearman(a, b) == pytest.approx(expected)
  params = {"conv1": {"kernel": jnp.ones((2, 2))}, "conv2": {"kernel": jnp.ones((2, 2))},
            "head": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
  one = faithfulness.randomize_from_top(params, 1, jax.random.PRNGKey(0))
  assert one["conv1"] is params["conv1"] and one["conv2"] is params["conv2"]
  assert not np.allclose(one["head"]["kernel"], 1.0)
  two = faithfulness.randomize_from_top(params, 2, jax.random.PRNGKey(0))
  assert two["conv1"] is params["conv1"] and not np.allclose(two["conv2"]["kernel"], 1.0)


def test_occlusion_of_a_linear_model():
  """One-element windows give exactly (x - x')·w; a non-overlapping window gives each of
  its elements the whole window's drop; overlapping windows average the drops."""
  rng = np.random.default_rng(1)
  w = rng.normal(size=(6, 6, 2, 3)).astype(np.float32)
  f = lambda z: jnp.einsum("bhwc,hwck->bk", z, w)
  x = jnp.asarray(rng.random((4, 6, 6, 2)), jnp.float32)
  t = jnp.array([0, 1, 2, 0])
  exact = x * jnp.moveaxis(w, -1, 0)[t]
  np.testing.assert_allclose(methods.occlusion(f, x, t, window=(1, 1, 1)), exact,
                             rtol=1e-5, atol=1e-6)
  blocks = methods.occlusion(f, x, t, window=(3, 3, 0))
  top_left = exact[:, :3, :3].sum((1, 2, 3))
  np.testing.assert_allclose(blocks[:, 1, 2, 1], top_left, rtol=1e-5, atol=1e-5)
  # Stride 1 over 6 with window 3: pixel 0 is in one window, pixel 2 in three.
  rows = methods.occlusion(f, x, t, window=(3, 0, 0), stride=(1, 0, 0))
  drops = [exact[:, a:a + 3].sum((1, 2, 3)) for a in range(4)]
  np.testing.assert_allclose(rows[:, 0, 0, 0], drops[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(rows[:, 2, 0, 0], (drops[0] + drops[1] + drops[2]) / 3,
                             rtol=1e-5, atol=1e-5)
  # Text-shaped input [B, T, D]: a window of one token and the whole embedding.
  v = rng.normal(size=(5, 4)).astype(np.float32)
  g = lambda z: z.sum(-1) @ v[:, :2]
  e = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
  tok = methods.occlusion(g, e, jnp.array([0, 1, 0]), window=(1, 0))
  np.testing.assert_allclose(tok.sum(-1) / 4, e.sum(-1) * v[:, [0, 1, 0]].T, rtol=1e-5)


def test_occlusion_refuses_windows_that_do_not_fit():
  f = lambda z: z.reshape(2, -1)[:, :3]
  x = jnp.ones((2, 6, 6, 1))
  with pytest.raises(ConfigError, match="one entry per input axis"):
    methods.occlusion(f, x, jnp.array([0, 1]), window=(2, 2))
  with pytest.raises(ConfigError, match=r"do not fit an input of shape \(6, 6, 1\)"):
    methods.occlusion(f, x, jnp.array([0, 1]), window=(7, 2, 0))
  with pytest.raises(ConfigError, match="occlusion needs a window"):
    methods.attribute("occlusion", f, x, jnp.array([0, 1]))
