"""build_model, variable helpers, registry errors and logical partition specs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import pytest
from jax.sharding import PartitionSpec as P

from mmjax import models
from mmjax.errors import ConfigError

IMAGE = {"image": jnp.zeros((2, 8, 8, 1))}
TINY_VIT = dict(name="vit", image_size=8, patch_size=4, width=16, depth=2, num_heads=2,
                mlp_dim=32)


def test_registry_holds_every_family():
  assert {"vit", "text_transformer", "mnist_cnn", "preact_resnet18",
          "wide_resnet"} <= set(models.MODELS.names())


def test_unknown_model_name_names_it_and_the_choices():
  with pytest.raises(ConfigError) as err:
    models.build_model({"name": "vitt"})
  msg = str(err.value)
  assert "'vitt'" in msg and "config.model.name" in msg
  assert "vit" in msg and "wide_resnet" in msg and "Did you mean 'vit'" in msg


def test_unknown_field_names_the_key():
  with pytest.raises(ConfigError) as err:
    models.build_model({"name": "vit", "widht": 32})
  assert "widht" in str(err.value) and "config.model" in str(err.value)


def test_missing_name_is_a_config_error():
  with pytest.raises(ConfigError, match="name"):
    models.build_model({"width": 32})


def test_bad_choice_values_are_config_errors():
  for bad in ({"pool": "max"}, {"dtype": "float16"}, {"remat": "some"}):
    model = models.build_model({**TINY_VIT, **bad})
    with pytest.raises(ConfigError, match=list(bad)[0]):
      models.abstract_variables(model, IMAGE)


def test_config_dict_with_lists_builds():
  cfg = ml_collections.ConfigDict(dict(TINY_VIT, channels=3, pixel_mean=[0.4, 0.5, 0.6]))
  model = models.build_model(cfg)
  assert isinstance(model, nn.Module) and model.pixel_mean == (0.4, 0.5, 0.6)
  batch = {"image": jnp.zeros((1, 8, 8, 3))}
  out = jax.eval_shape(lambda v: model.apply(v, batch), models.abstract_variables(model, batch))
  assert out["logits"].shape == (1, 10)


def test_init_variables_are_unboxed_and_abstract_matches():
  model = models.build_model(dict(TINY_VIT, scan_layers=True))
  variables = models.init_variables(model, IMAGE, jax.random.key(0))
  leaves = jax.tree_util.tree_leaves(variables, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, jax.Array) for x in leaves)
  abstract = models.abstract_variables(model, IMAGE)
  assert jax.tree_util.tree_structure(abstract) == jax.tree_util.tree_structure(variables)
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(abstract))
  assert models.param_count(abstract) == models.param_count(variables["params"])


def test_param_count():
  tree = {"a": jnp.zeros((3, 4)), "b": [jnp.zeros(5), jax.ShapeDtypeStruct((2, 2), jnp.float32)]}
  assert models.param_count(tree) == 12 + 5 + 4


@pytest.mark.parametrize("scan", [False, True])
def test_logical_partition_specs_for_transformer_kernels(scan):
  model = models.build_model(dict(TINY_VIT, scan_layers=scan))
  specs = models.logical_partition_specs(model, IMAGE)["params"]
  enc = specs["encoder"]["blocks" if scan else "block_0"]
  lead = ("layers",) if scan else ()
  assert enc["attn"]["query"]["kernel"] == P(*lead, "embed", "heads", "kv")
  assert enc["attn"]["out"]["kernel"] == P(*lead, "heads", "kv", "embed")
  assert enc["mlp"]["fc1"]["kernel"] == P(*lead, "embed", "mlp")
  assert enc["mlp"]["fc2"]["kernel"] == P(*lead, "mlp", "embed")
  assert enc["ln_attn"]["scale"] == P(*lead, "embed")
  assert specs["pos_embed"]["embedding"] == P(None, "embed")
  # Every spec has exactly one name per array dimension.
  abstract = models.abstract_variables(model, IMAGE)["params"]
  for spec, leaf in zip(jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, P)),
                        jax.tree_util.tree_leaves(abstract)):
    assert len(spec) == leaf.ndim
