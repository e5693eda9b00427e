"""Sharded training equals unsharded training: one train step under data parallelism,
FSDP, tensor parallelism and their combinations, on 8 fake CPU devices, against 1 device;
and the rule table, mesh and activation-constraint helpers."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mmjax import parallel
from mmjax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def sharded_results():
  # The repo root on the path: the script imports configs.common, as config files do.
  proc = subprocess.run([sys.executable, "tests/parallel/sharded_steps.py"], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO))
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULTS "))
  return json.loads(line[len("RESULTS "):])


@pytest.mark.parametrize("mesh", ["dp", "fsdp", "tp", "fsdp_tp"])
def test_one_step_matches_one_device(sharded_results, mesh):
  r = sharded_results[f"gpt_sgd/{mesh}"]
  assert r["loss_diff"] < 1e-5
  assert r["max_param_diff"] < 1e-5
  assert np.isfinite(r["loss"]) and r["loss"] > 1.0   # a real, untrained LM loss


def test_gradient_accumulation_under_fsdp_x_tp_matches_one_device(sharded_results):
  r = sharded_results["vit_sgd_accum2/fsdp_tp"]
  assert r["loss_diff"] < 1e-5 and r["max_param_diff"] < 1e-5


@pytest.mark.parametrize("mesh", ["dp", "fsdp"])
def test_dp_sgd_step_is_the_same_on_1_and_8_devices(sharded_results, mesh):
  r = sharded_results[f"vit_dp_accum2/{mesh}"]
  assert r["loss_diff"] < 1e-5 and r["max_param_diff"] < 1e-5
  # Against the non-private step on the same batch: the noise moved the parameters.
  assert r["vs_nonprivate"] > 1e-3


def test_strategies_place_parameters_as_the_rules_say(sharded_results):
  fsdp = sharded_results["gpt_sgd/fsdp"]["param_specs"]
  assert fsdp["encoder/blocks/mlp/fc1/kernel"] == "P(None, 'fsdp', None)"  # [L, D, F]
  assert fsdp["encoder/blocks/mlp/fc2/kernel"] == "P(None, 'fsdp', None)"  # [L, F, D]
  assert fsdp["token_embed/embedding"] == "P(None, 'fsdp')"
  tp = sharded_results["gpt_sgd/tp"]["param_specs"]
  assert tp["encoder/blocks/mlp/fc1/kernel"] == "P(None, None, 'model')"
  assert tp["encoder/blocks/mlp/fc2/kernel"] == "P(None, 'model', None)"
  assert tp["encoder/blocks/attn/query/kernel"] == "P(None, None, 'model', None)"
  assert tp["encoder/blocks/attn/out/kernel"] == "P(None, 'model', None, None)"
  assert tp["token_embed/embedding"] == "P('model', None)"
  both = sharded_results["gpt_sgd/fsdp_tp"]["param_specs"]
  assert both["encoder/blocks/mlp/fc1/kernel"] == "P(None, 'fsdp', 'model')"
  dp = sharded_results["gpt_sgd/dp"]["param_specs"]
  assert all("fsdp" not in s and "model" not in s for s in dp.values())
  # Per-device parameter bytes: ~1/8 under FSDP on 8 devices (LayerNorm and biases not
  # divisible stay small), ~1/4 under 4-way TP (LayerNorms replicated), all under DP.
  assert sharded_results["gpt_sgd/fsdp"]["param_bytes_per_device_fraction"] < 0.14
  assert sharded_results["gpt_sgd/tp"]["param_bytes_per_device_fraction"] < 0.3
  assert sharded_results["gpt_sgd/dp"]["param_bytes_per_device_fraction"] == 1.0


def test_device_preprocessing_is_the_same_on_one_or_eight_devices(sharded_results):
  r = sharded_results["device_preprocess"]
  # The same draws per example (another draw would differ by O(1)); float rounding only.
  assert r["max_diff"] < 1e-5
  assert r["output_spec"] == "P('data',)"   # left split over the batch, like the step's
  assert r["keys"] == ["image", "label", "spectrogram"]


def test_fsdp_shards_the_optimizer_state(sharded_results):
  r = sharded_results["gpt_adamw/fsdp"]
  assert r["loss_diff"] < 1e-5
  # Adam's mu and nu are placed like their parameters.
  assert "P(None, 'fsdp', None)" in r["opt_state_specs"]
  assert "P(None, None, None, 'fsdp')" in r["opt_state_specs"]


def test_mesh_shape_fills_the_free_axis_and_rejects_bad_shapes():
  assert parallel.mesh_shape({"data": -1}, 8) == {"data": 8, "fsdp": 1, "model": 1}
  assert parallel.mesh_shape({"fsdp": -1, "model": 2}, 8) == {"data": 1, "fsdp": 4,
                                                              "model": 2}
  with pytest.raises(ConfigError, match="unknown axes"):
    parallel.mesh_shape({"tensor": 2}, 8)
  with pytest.raises(ConfigError, match="multiply to 8"):
    parallel.mesh_shape({"data": 2, "model": 2}, 8)
  with pytest.raises(ConfigError, match="multiple of 3"):
    parallel.mesh_shape({"data": -1, "model": 3}, 8)
  with pytest.raises(ConfigError, match="at most one -1"):
    parallel.mesh_shape({"data": -1, "fsdp": -1}, 8)


def test_rules_are_checked():
  with pytest.raises(ConfigError, match="unknown mesh axes"):
    parallel.rules_from_config({"rules": (("mlp", "tensor"),)})
  with pytest.raises(ConfigError, match="must be a pair"):
    parallel.rules_from_config({"rules": (("mlp",),)})
  rules = parallel.rules_from_config({"rules": (("batch", ("data",)), ("mlp", None))})
  assert parallel.batch_axes(rules) == ("data",)


def test_uneven_dimensions_fall_back_to_the_next_rule_or_replicate():
  fake = type("FakeMesh", (), {"shape": {"data": 1, "fsdp": 1, "model": 4}})()
  spec, uneven = parallel.mesh_spec(("vocab", "embed"), (50257, 768), fake,
                                    parallel.DEFAULT_RULES)
  assert spec == P(None, None) and uneven == [0]
  spec, uneven = parallel.mesh_spec(("vocab", "embed"), (50304, 768), fake,
                                    parallel.DEFAULT_RULES)
  assert spec == P("model", None) and uneven == []
  # GPT-2 XL's width 1600 does not divide by 256-way FSDP: its MLP dim (6400) takes it.
  fsdp = type("FakeMesh", (), {"shape": {"data": 1, "fsdp": 256, "model": 1}})()
  spec, uneven = parallel.mesh_spec((None, "embed", "mlp"), (48, 1600, 6400), fsdp,
                                    parallel.DEFAULT_RULES)
  assert spec == P(None, None, "fsdp") and uneven == []   # sharded, on another dim
  # Size-1 axes shard nothing, so they do not take a dim from a later rule.
  spec, _ = parallel.mesh_spec(("embed", "mlp"), (64, 512), fsdp, (("mlp", "model"),
                                                                   ("mlp", "fsdp")))
  assert spec == P(None, "fsdp")


def test_constrain_is_a_no_op_outside_the_rules_and_pins_inside():
  x = jax.numpy.ones((4, 3, 8))
  names = ("batch", "act_length", "act_embed")
  assert parallel.constrain(x, names) is x
  assert "sharding_constraint" not in str(jax.make_jaxpr(
      lambda a: parallel.constrain(a, names))(x))
  mesh = parallel.make_mesh({"shape": {"data": -1}})
  with parallel.activation_rules(mesh, parallel.DEFAULT_RULES):
    jaxpr = str(jax.make_jaxpr(lambda a: parallel.constrain(a, names))(x))
    # A per-example (vmapped) activation has no batch axis: left alone.
    row = x[0]
    assert parallel.constrain(row, names) is row
  assert "sharding_constraint" in jaxpr
