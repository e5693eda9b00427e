"""QLoRA: LoRA adapters and the head train in float32 while the base stays int8 and
frozen, and the loss falls."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax import models
from mmjax.errors import ConfigError
from mmjax.quant import qlora

TEXT = dict(name="text_transformer", vocab_size=50, max_len=8, width=32, depth=1,
            num_heads=2, mlp_dim=64, num_classes=4, lm_head=False, lora_rank=2)


def _batch():
  rng = np.random.default_rng(0)
  return {"text": jnp.asarray(rng.integers(0, 50, size=(16, 8)), jnp.int32),
          "text_mask": jnp.ones((16, 8), jnp.int32),
          "label": jnp.asarray(rng.integers(0, 4, size=16), jnp.int32)}


def _cross_entropy(outputs, batch):
  return optax.softmax_cross_entropy_with_integer_labels(outputs["logits"],
                                                         batch["label"]).mean()


def test_only_adapters_and_head_train_and_the_base_stays_int8():
  model, batch = models.build_model(TEXT), _batch()
  variables = models.init_variables(model, batch, jax.random.PRNGKey(0))
  qmodel, frozen, trainable = qlora.split(model, variables, batch)
  trained_paths = {"/".join(str(k.key) for k in p) for p, _ in
                   jax.tree_util.tree_leaves_with_path(trainable)}
  assert trained_paths and all("_lora/" in p or p.startswith("head/")
                               for p in trained_paths)
  int8 = [x for x in jax.tree.leaves(frozen) if x.dtype == jnp.int8]
  assert len(int8) == 6   # query, key, value, out, fc1, fc2 kernels
  tx = optax.adam(1e-2)
  step = qlora.make_train_step(qmodel, _cross_entropy, tx)
  opt_state = tx.init(trainable)
  before = trainable
  losses = []
  for _ in range(8):
    trainable, opt_state, loss = step(trainable, opt_state, frozen, batch)
    losses.append(float(loss))
  assert losses[-1] < losses[0]
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, trainable)
  assert all(jax.tree.leaves(moved))   # every adapter and head parameter trained
  # The frozen int8 base is what the model runs on, untouched by the updates.
  params = qlora.merge(frozen, trainable)
  assert [x.dtype for x in jax.tree.leaves(params)].count(jnp.int8) == 6


def test_a_model_without_lora_is_refused():
  config = dict(TEXT, lora_rank=0)
  model, batch = models.build_model(config), _batch()
  variables = models.init_variables(model, batch, jax.random.PRNGKey(0))
  with pytest.raises(ConfigError, match="model.lora_rank > 0"):
    qlora.split(model, variables, batch)
