"""The PyTorch mirrors (mmjax/bench/torch_mirror.py) compute mmjax's logits: with a flax
model's variables copied in, the MNIST CNN, PreActResNet-18 and a small WideResNet give
the flax model's eval-mode logits on random images.

The checks run in a fresh process (this file again, with MMJAX_TORCH_MIRROR_CHILD=1), as
tests/bench/test_torch_reference.py does: importing PyTorch into a process that has
loaded TensorFlow (any pytest worker that ran a data test) can abort it. Skipped where
PyTorch (optional: the `bench` extra) is not installed.
"""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CHILD = os.environ.get("MMJAX_TORCH_MIRROR_CHILD") == "1"


@pytest.mark.skipif(_CHILD, reason="the parent's test; this is the child process")
@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="PyTorch is not installed (pip install -e '.[bench]')")
def test_torch_mirrors_match_flax_in_a_fresh_process():
  proc = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
       os.path.relpath(__file__, REPO)], cwd=REPO, capture_output=True, text=True,
      timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu", MMJAX_TORCH_MIRROR_CHILD="1"))
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
  assert "4 passed" in proc.stdout, proc.stdout[-3000:]


def _random_variables(model, image_shape, seed):
  """Every variable random, so that any tensor copied to the wrong place (or transposed
  wrongly) changes the logits: He-scaled kernels, BatchNorm scale 1 +- 0.1, biases and
  means +- 0.1, variances 1 + |0.1 n|. Drawn with numpy from the abstract shapes: no init
  compile (PreActResNet-18's takes ~15 s on 2 cores)."""
  import jax  # pylint: disable=g-import-not-at-top
  from mmjax import models  # pylint: disable=g-import-not-at-top
  abstract = models.abstract_variables(
      model, {"image": np.zeros((1, *image_shape), np.float32)})
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    noise = 0.1 * rng.standard_normal(leaf.shape).astype(np.float32)
    if name.endswith("['kernel']"):
      fan_in = int(np.prod(leaf.shape[:-1]))
      return rng.standard_normal(leaf.shape).astype(np.float32) * np.sqrt(2.0 / fan_in)
    if name.endswith("['scale']"):
      return 1.0 + noise
    if name.endswith("['var']"):
      return 1.0 + np.abs(noise)
    return noise   # biases, running means

  return jax.tree_util.tree_map_with_path(draw, abstract)


@pytest.mark.skipif(not _CHILD, reason="runs in the child process of the test above")
@pytest.mark.parametrize("model_config,image_shape", [
    (dict(name="mnist_cnn", num_classes=10), (28, 28, 1)),
    (dict(name="preact_resnet18", num_classes=10), (32, 32, 3)),
    # Stage 1 keeps the stride but widens 16 -> 32: a shortcut conv at stride 1.
    (dict(name="wide_resnet", depth=10, widen_factor=2, num_classes=10, dropout=0.3),
     (32, 32, 3)),
])
def test_mirror_logits_equal_flax_logits(model_config, image_shape):
  torch = pytest.importorskip("torch")
  import jax  # pylint: disable=g-import-not-at-top
  from mmjax import models  # pylint: disable=g-import-not-at-top
  from mmjax.bench import torch_mirror  # pylint: disable=g-import-not-at-top
  model = models.build_model(model_config)
  variables = _random_variables(model, image_shape, seed=0)
  images = np.random.default_rng(1).uniform(size=(2, *image_shape)).astype(np.float32)
  flax_logits = np.asarray(jax.jit(
      lambda v, x: model.apply(v, {"image": x}, train=False)["logits"])(variables, images))

  mirror = torch_mirror.load_flax_params(
      torch_mirror.mirror_for(model_config, image_shape=image_shape), variables)
  assert not mirror.training
  assert sum(p.numel() for p in mirror.parameters()) == models.param_count(
      variables["params"])
  with torch.no_grad():
    torch_logits = mirror(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  # float32 rounding only (~1e-6 relative): a wrong transpose, flatten order or
  # train-mode BatchNorm moves logits of size ~1-10 by far more than 1e-4.
  scale = max(1.0, float(np.abs(flax_logits).max()))
  np.testing.assert_allclose(torch_logits, flax_logits, atol=1e-4 * scale, rtol=0)
  assert np.abs(flax_logits).max() > 0.1   # not a dead network whose logits are the bias


@pytest.mark.skipif(not _CHILD, reason="runs in the child process of the test above")
def test_load_flax_params_refuses_a_mismatched_tree():
  pytest.importorskip("torch")
  from mmjax import models  # pylint: disable=g-import-not-at-top
  from mmjax.bench import torch_mirror  # pylint: disable=g-import-not-at-top
  config = dict(name="mnist_cnn", num_classes=10)
  variables = _random_variables(models.build_model(config), (28, 28, 1), seed=0)
  # A 32x32 mirror wants fc1 of 32*8*8 inputs, the 28x28 flax model has 32*7*7.
  with pytest.raises(ValueError, match="fc1"):
    torch_mirror.load_flax_params(
        torch_mirror.mirror_for(config, image_shape=(32, 32, 1)), variables)
  del variables["params"]["fc2"]
  with pytest.raises(RuntimeError, match="fc2"):   # strict load: fc2 left unset
    torch_mirror.load_flax_params(
        torch_mirror.mirror_for(config, image_shape=(28, 28, 1)), variables)
