"""ViT: output shapes, ViT-B/16 size, MAE masking and targets, dropout, dtypes."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models
from mmjax.errors import ConfigError
from mmjax.models import patchify, unpatchify

TINY = dict(name="vit", image_size=8, patch_size=2, channels=3, width=16, depth=2,
            num_heads=2, mlp_dim=32)
IMAGES = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))


@functools.partial(jax.jit, static_argnames=("model", "method", "train", "mask_ratio"))
def _apply(model, variables, inputs, rngs=None, *, method="__call__", train=False,
           mask_ratio=None):
  kw = {} if mask_ratio is None else {"mask_ratio": mask_ratio}
  return model.apply(variables, inputs, rngs=rngs, method=method, train=train, **kw)


def _build(**kw):
  model = models.build_model({**TINY, **kw})
  return model, models.init_variables(model, {"image": IMAGES}, jax.random.key(0))


@pytest.fixture(scope="module")
def cls_vit():
  """cls pooling, dropout, scanned + rematerialised layers, MAE decoder of depth 2."""
  return _build(dropout=0.1, decoder_width=8, decoder_depth=2, scan_layers=True,
                remat="full")


@pytest.fixture(scope="module")
def gap_vit():
  """Average pooling, projection head, unscanned layers, MAE decoder of depth 1.

  Its variables are drawn on the host in the shapes `abstract_variables` gives: compiling
  the real initialisers costs seconds on CPU, and `cls_vit` already runs them.
  """
  model = models.build_model({**TINY, "pool": "gap", "projection_dim": 6,
                              "decoder_width": 8, "decoder_depth": 1, "decoder_heads": 2})
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    if "scale" in jax.tree_util.keystr(path):
      return jnp.ones(leaf.shape, leaf.dtype)
    fan_in = np.prod(leaf.shape[:-1]) if leaf.ndim > 1 else 1
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)
  abstract = models.abstract_variables(model, {"image": IMAGES})
  return model, jax.tree_util.tree_map_with_path(draw, abstract)


def test_vit_b16_param_count():
  model = models.build_model(dict(name="vit", image_size=224, patch_size=16, channels=3,
                                  width=768, depth=12, num_heads=12, mlp_dim=3072,
                                  num_classes=1000, pool="cls", scan_layers=True))
  batch = {"image": jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)}
  assert models.param_count(models.abstract_variables(model, batch)["params"]) == 86_567_656


def test_cls_outputs(cls_vit):
  model, variables = cls_vit
  out = _apply(model, variables, {"image": IMAGES})
  assert set(out) == {"hidden", "pooled", "logits"}
  assert out["hidden"].shape == (2, 17, 16)  # 16 patches + cls
  assert out["pooled"].shape == (2, 16) and out["logits"].shape == (2, 10)
  np.testing.assert_array_equal(out["pooled"], out["hidden"][:, 0])
  # embed keeps pixels; encode(embed(x)) == __call__(x).
  inputs = _apply(model, variables, {"image": IMAGES}, method="embed")
  np.testing.assert_array_equal(inputs["image"], IMAGES)  # pixels stay pixels
  # Dropout: deterministic at eval, random in training.
  np.testing.assert_array_equal(_apply(model, variables, {"image": IMAGES})["logits"],
                                out["logits"])
  train = _apply(model, variables, {"image": IMAGES}, {"dropout": jax.random.key(3)},
                 train=True)
  assert not np.allclose(train["logits"], out["logits"])


def test_gap_projection_outputs(gap_vit):
  model, variables = gap_vit
  out = _apply(model, variables, {"image": IMAGES})
  assert set(out) == {"hidden", "pooled", "logits", "projection"}
  assert out["hidden"].shape == (2, 16, 16) and out["projection"].shape == (2, 6)
  np.testing.assert_allclose(out["pooled"], out["hidden"].mean(1), atol=1e-5)


def test_patchify_order_and_round_trip():
  patches = patchify(IMAGES, 2)
  assert patches.shape == (2, 16, 12)
  np.testing.assert_array_equal(patches[:, 0], IMAGES[:, :2, :2].reshape(2, 12))
  np.testing.assert_array_equal(patches[:, 1], IMAGES[:, :2, 2:4].reshape(2, 12))
  np.testing.assert_array_equal(patches[:, 4], IMAGES[:, 2:4, :2].reshape(2, 12))
  np.testing.assert_array_equal(unpatchify(patches, 2, 8, 8), IMAGES)


@pytest.mark.parametrize("pool,mask_ratio,hidden",
                         [("gap", 0.75, 12), ("gap", 0.5, 8), ("cls", 0.3, 5)])
def test_mae_masks_and_targets(cls_vit, gap_vit, pool, mask_ratio, hidden):
  model, variables = cls_vit if pool == "cls" else gap_vit
  out = _apply(model, variables, {"image": IMAGES}, {"mask": jax.random.key(5)},
               method="mae", mask_ratio=mask_ratio)
  assert out["pred"].shape == out["target"].shape == (2, 16, 12)
  assert out["mask"].shape == (2, 16)
  assert set(np.unique(out["mask"])) == {0.0, 1.0}
  # int(16 * (1 - ratio)) patches stay visible in every example.
  np.testing.assert_array_equal(out["mask"].sum(axis=1), [hidden, hidden])
  np.testing.assert_array_equal(out["target"], patchify(IMAGES, 2))
  other = _apply(model, variables, {"image": IMAGES}, {"mask": jax.random.key(6)},
                 method="mae", mask_ratio=mask_ratio)
  assert not np.array_equal(other["mask"], out["mask"])


def test_heads_are_optional_and_errors_are_clear():
  # Traced with eval_shape on abstract variables: nothing is compiled or allocated.
  batch = {"image": IMAGES}
  model = models.build_model({**TINY, "num_classes": 0})
  abstract = models.abstract_variables(model, batch)
  assert "head" not in abstract["params"] and "decoder" not in abstract["params"]
  out = jax.eval_shape(lambda v: model.apply(v, batch), abstract)
  assert set(out) == {"hidden", "pooled"}
  with pytest.raises(ConfigError, match="decoder"):
    jax.eval_shape(lambda v: model.apply(v, batch, method="mae",
                                         rngs={"mask": jax.random.key(0)}), abstract)
  with pytest.raises(ConfigError, match="image_size"):
    jax.eval_shape(lambda v: model.apply(v, {"image": IMAGES[:, :4]}), abstract)


def test_scan_matches_loop_param_count_and_bfloat16():
  batch = {"image": IMAGES}
  counts = {s: models.param_count(models.abstract_variables(
      models.build_model({**TINY, "scan_layers": s}), batch)) for s in (False, True)}
  assert counts[False] == counts[True]
  model = models.build_model({**TINY, "dtype": "bfloat16", "scan_layers": True})
  abstract = models.abstract_variables(model, batch)
  assert {x.dtype for x in jax.tree_util.tree_leaves(abstract)} == {jnp.dtype("float32")}
  out = jax.eval_shape(lambda v: model.apply(v, batch), abstract)
  assert out["logits"].dtype == jnp.float32 and out["hidden"].shape == (2, 17, 16)
