"""Parameter-efficient fine-tuning: LoRA and adapter hooks, merge_lora, trainable masks."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from mmjax import models
from mmjax.errors import ConfigError
from mmjax.models import layers, peft

TEXT = dict(name="text_transformer", vocab_size=50, max_len=12, width=16, depth=2,
            num_heads=2, mlp_dim=32, num_classes=3)
GPT = dict(TEXT, causal=True, pool="last")
BERT = dict(TEXT, norm_position="post", embed_norm=True, layer_norm_eps=1e-12,
            activation="gelu", type_vocab_size=2, pooler=True, token_classes=5)
VIT = dict(name="vit", image_size=8, patch_size=4, channels=1, width=16, depth=2,
           num_heads=2, mlp_dim=32, num_classes=3)
BATCH_TEXT = {"text": jax.random.randint(jax.random.key(1), (2, 10), 4, 50),
              "text_mask": jnp.array([[1] * 7 + [0] * 3, [1] * 10])}
BATCH_IMAGE = {"image": jax.random.uniform(jax.random.key(2), (2, 8, 8, 1))}
# The attention output projection contracts 2 dims (heads, kv); the others 1.
IN_DIMS = {"query": 1, "key": 1, "value": 1, "out": 2, "fc1": 1, "fc2": 1}


# Eager init/apply: for models this small, op-by-op dispatch (with its per-op cache shared
# by all tests) is much faster than compiling each variant.
def _apply(model, params, batch):
  return model.apply({"params": params}, batch)


def _init(cfg, batch, seed=0):
  model = models.build_model(cfg)
  boxed = model.init({"params": jax.random.key(seed)}, batch, method="initialize")
  return model, nn.meta.unbox(boxed)["params"]


def _normal(rng, shape, scale):
  """numpy draws: a jax.random call per new shape would compile a kernel each."""
  return jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)


def _shaped(cfg, batch, seed=0):
  """(model, params) with random values and no init compute: shapes from eval_shape,
  LayerNorm scales 1 + N(0, 0.1^2), everything else N(0, 0.2^2)."""
  model = models.build_model(cfg)
  shapes = jax.eval_shape(lambda: nn.meta.unbox(model.init(
      {"params": jax.random.key(0)}, batch, method="initialize"))["params"])
  rng = np.random.default_rng(seed)
  return model, traverse_util.unflatten_dict(
      {k: 1.0 + _normal(rng, v.shape, 0.1) if k.endswith("/scale")
       else _normal(rng, v.shape, 0.2) for k, v in _flat(shapes).items()}, sep="/")


def _flat(tree):
  return traverse_util.flatten_dict(tree, sep="/")


def _batch(cfg):
  return BATCH_IMAGE if cfg["name"] == "vit" else BATCH_TEXT


def _with_base(params, base):
  """`params` with every leaf that `base` also has replaced by base's."""
  flat, flat_base = _flat(params), _flat(base)
  assert set(flat_base) <= set(flat)
  return traverse_util.unflatten_dict({**flat, **flat_base}, sep="/")


def _randomize(params, pattern, seed, scale=0.3):
  """`params` with every leaf whose path contains `pattern` drawn from N(0, scale^2)."""
  flat = dict(_flat(params))
  keys = sorted(k for k in flat if pattern in k)
  assert keys, pattern
  rng = np.random.default_rng(seed)
  for k in keys:
    flat[k] = _normal(rng, flat[k].shape, scale)
  return traverse_util.unflatten_dict(flat, sep="/")


def _assert_outputs_close(a, b, atol):
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), atol=atol, err_msg=k)


def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(a[k] - b[k]))) for k in a)


# ------------------------------------------------------------------------- LoRA params

@pytest.mark.parametrize("targets", [("query", "value"), ("key", "out"), ("fc1", "fc2"),
                                     layers.LORA_TARGETS])
def test_lora_params_only_for_targets_with_low_rank_shapes(targets):
  """'<t>_lora/{a,b}' exist exactly for the targets, a [in..., r], b [r, out...], b = 0;
  the LoRA model equals the base model at init (same base weights)."""
  rank = 3
  base_model, base = _init(TEXT, BATCH_TEXT)
  model, params = _init(dict(TEXT, lora_rank=rank, lora_targets=targets), BATCH_TEXT, 1)
  flat = _flat(params)
  lora = {k for k in flat if "_lora/" in k}
  where = {"query": "attn", "key": "attn", "value": "attn", "out": "attn", "fc1": "mlp",
           "fc2": "mlp"}
  expected = {f"encoder/block_{i}/{where[t]}/{t}_lora/{w}"
              for i in range(2) for t in targets for w in "ab"}
  assert lora == expected
  assert set(flat) - lora == set(_flat(base))   # nothing else added or renamed
  for i in range(2):
    for t in targets:
      prefix = f"encoder/block_{i}/{where[t]}/{t}"
      kernel = flat[f"{prefix}/kernel"].shape
      n = IN_DIMS[t]
      assert flat[f"{prefix}_lora/a"].shape == (*kernel[:n], rank)
      assert flat[f"{prefix}_lora/b"].shape == (rank, *kernel[n:])
      assert not np.any(flat[f"{prefix}_lora/b"])
      assert np.std(flat[f"{prefix}_lora/a"]) > 0.01   # A is random, B is zero
  _assert_outputs_close(_apply(model, _with_base(params, base), BATCH_TEXT),
                        _apply(base_model, base, BATCH_TEXT), atol=1e-6)


@pytest.mark.parametrize("cfg", [VIT, dict(GPT, scan_layers=True)], ids=["vit", "gpt_scan"])
def test_lora_in_vit_and_scanned_models_starts_at_base(cfg):
  """ViT and scanned text models get LoRA (leading layer axis when scanned) and start
  equal to the base model."""
  batch = _batch(cfg)
  base_model, base = _init(cfg, batch)
  model, params = _init(dict(cfg, lora_rank=2, lora_targets=("value", "fc2")), batch, 1)
  lora = {k: v.shape for k, v in _flat(params).items() if "_lora/" in k}
  if cfg.get("scan_layers"):
    assert lora == {"encoder/blocks/attn/value_lora/a": (2, 16, 2),
                    "encoder/blocks/attn/value_lora/b": (2, 2, 2, 8),
                    "encoder/blocks/mlp/fc2_lora/a": (2, 32, 2),
                    "encoder/blocks/mlp/fc2_lora/b": (2, 2, 16)}
  else:
    assert len(lora) == 8 and all(k.startswith("encoder/block_") for k in lora)
  _assert_outputs_close(_apply(model, _with_base(params, base), batch),
                        _apply(base_model, base, batch), atol=1e-6)


@pytest.mark.parametrize("in_shape,features", [((6,), (5,)), ((2, 3), (4,)),
                                               ((6,), (2, 3))])
def test_lora_module_is_scaled_low_rank_product(in_shape, features):
  """LoRA(x) = (alpha / rank) * x A B, contracting len(in_shape) trailing dims."""
  rank, alpha = 2, 5.0
  mod = layers.LoRA(features, rank, alpha, (None,) * len(in_shape), (None,) * len(features))
  x = jax.random.normal(jax.random.key(0), (3, *in_shape))
  a = jax.random.normal(jax.random.key(1), (*in_shape, rank))
  b = jax.random.normal(jax.random.key(2), (rank, *features))
  got = mod.apply({"params": {"a": a, "b": b}}, x)
  xa = np.asarray(x).reshape(3, -1) @ np.asarray(a).reshape(-1, rank)
  want = (alpha / rank) * (xa @ np.asarray(b).reshape(rank, -1)).reshape(3, *features)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------- merge_lora

@pytest.mark.parametrize("scan", [False, True], ids=["unscanned", "scanned"])
@pytest.mark.parametrize("cfg", [GPT, BERT], ids=["gpt", "bert"])
def test_merge_lora_gives_same_outputs_as_unmerged(cfg, scan):
  """merge_lora(params) on the lora_rank=0 model == the LoRA model with nonzero A, B
  (all six targets, alpha != rank), and has exactly the base model's tree."""
  rank, alpha = 2, 6.0
  cfg = dict(cfg, scan_layers=scan)
  base_model, base = _shaped(cfg, BATCH_TEXT)
  model, params = _shaped(dict(cfg, lora_rank=rank, lora_alpha=alpha,
                               lora_targets=layers.LORA_TARGETS), BATCH_TEXT, 1)
  unmerged = _apply(model, params, BATCH_TEXT)
  merged = peft.merge_lora(params, alpha)
  assert jax.tree.structure(merged) == jax.tree.structure(base)
  assert jax.tree.map(jnp.shape, merged) == jax.tree.map(jnp.shape, base)
  _assert_outputs_close(_apply(base_model, merged, BATCH_TEXT), unmerged, atol=1e-5)
  # The LoRA update is not negligible, so a wrong scale would show.
  without = traverse_util.unflatten_dict(
      {k: v for k, v in _flat(params).items() if "_lora/" not in k}, sep="/")
  assert _max_diff(_apply(base_model, without, BATCH_TEXT), unmerged) > 0.05
  wrong = peft.merge_lora(params, float(rank))   # scale 1 instead of alpha / rank = 3
  assert _max_diff(_apply(base_model, wrong, BATCH_TEXT), unmerged) > 1e-3


@pytest.mark.parametrize("scan", [False, True], ids=["unscanned", "scanned"])
def test_merged_kernel_is_w_plus_scaled_ab(scan):
  """Each merged kernel is W + (alpha / rank) A B, per layer when scanned; other leaves
  are untouched."""
  rank, alpha = 4, 2.0
  _, params = _shaped(dict(TEXT, scan_layers=scan, lora_rank=rank, lora_alpha=alpha,
                          lora_targets=("query", "out", "fc1")), BATCH_TEXT)
  flat, merged = _flat(params), _flat(peft.merge_lora(params, alpha))
  assert not [k for k in merged if "_lora" in k]
  prefixes = ["encoder/blocks"] if scan else ["encoder/block_0", "encoder/block_1"]
  for prefix in prefixes:
    for t, sub in (("query", "attn"), ("out", "attn"), ("fc1", "mlp")):
      w = np.asarray(flat[f"{prefix}/{sub}/{t}/kernel"])
      a = np.asarray(flat[f"{prefix}/{sub}/{t}_lora/a"])
      b = np.asarray(flat[f"{prefix}/{sub}/{t}_lora/b"])
      layers_ = [(w[i], a[i], b[i]) for i in range(2)] if scan else [(w, a, b)]
      want = np.stack([wl + (alpha / rank) * np.tensordot(al, bl, axes=1)
                       for wl, al, bl in layers_])
      got = np.asarray(merged[f"{prefix}/{sub}/{t}/kernel"]).reshape(want.shape)
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  for k, v in merged.items():
    if not any(f"/{t}/kernel" in k for t in ("query", "out", "fc1")):
      np.testing.assert_array_equal(np.asarray(v), np.asarray(flat[k]))


def test_merge_lora_rejects_orphan_lora_params():
  """A '<name>_lora' without its '<name>' projection is a ConfigError naming it."""
  params = {"block": {"query_lora": {"a": jnp.ones((4, 2)), "b": jnp.ones((2, 4))},
                      "value": {"kernel": jnp.ones((4, 4))}}}
  with pytest.raises(ConfigError, match=r"\['query_lora'\] have no base projection"):
    peft.merge_lora(params, 16.0)


# ---------------------------------------------------------------------------- adapters

@pytest.mark.parametrize("cfg", [VIT, GPT, BERT], ids=["vit_pre", "gpt_pre", "bert_post"])
def test_adapters_start_as_identity_and_then_act(cfg):
  """adapter_attn/adapter_mlp per block, up-projection zero: outputs equal the base
  model's at init; perturbed adapters change them."""
  batch = _batch(cfg)
  base_model, base = _init(cfg, batch)
  model, params = _init(dict(cfg, adapter_dim=4), batch, 1)
  flat = _flat(params)
  added = set(flat) - set(_flat(base))
  assert added == {f"encoder/block_{i}/adapter_{s}/{d}/{w}" for i in range(2)
                   for s in ("attn", "mlp") for d in ("down", "up") for w in ("kernel", "bias")}
  for k in added:
    if "/up/" in k:
      assert not np.any(flat[k])
    elif k.endswith("down/kernel"):
      assert flat[k].shape == (16, 4) and np.any(flat[k])
  params = _with_base(params, base)
  start = _apply(model, params, batch)
  _assert_outputs_close(start, _apply(base_model, base, batch), atol=1e-6)
  moved = _apply(model, _randomize(params, "adapter_", seed=5), batch)
  assert _max_diff(moved, start) > 1e-2


def _ln(params, x, eps):
  return layers.layer_norm(jnp.float32, eps=eps).apply({"params": params}, x)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_block_applies_adapter_on_each_branch_before_residual(norm_position):
  """Pre-LN: x + A(attn(LN x)), then + A(mlp(LN x)); post-LN: LN(x + A(attn x)), then
  LN(x + A(mlp x)) (Houlsby placement), recomputed from the block's own sub-modules."""
  eps = 1e-5
  block = layers.TransformerBlock(2, 32, norm_position=norm_position, layer_norm_eps=eps,
                                  tuning=layers.Tuning(adapter_dim=4))
  x = jax.random.normal(jax.random.key(0), (2, 5, 16))
  mask = jnp.array([[1, 1, 1, 0, 0], [1] * 5])
  p = nn.meta.unbox(block.init(jax.random.key(1), x, mask))["params"]
  p = _randomize(p, "adapter_", seed=7)
  got, _ = block.apply({"params": p}, x, mask)

  attn = lambda h: layers.MultiHeadAttention(2).apply({"params": p["attn"]}, h, mask)
  mlp = lambda h: layers.MLP(32).apply({"params": p["mlp"]}, h)
  adapt = lambda name, h: layers.Adapter(4).apply({"params": p[name]}, h)
  if norm_position == "pre":
    h = x + adapt("adapter_attn", attn(_ln(p["ln_attn"], x, eps)))
    want = h + adapt("adapter_mlp", mlp(_ln(p["ln_mlp"], h, eps)))
  else:
    h = _ln(p["ln_attn"], x + adapt("adapter_attn", attn(x)), eps)
    want = _ln(p["ln_mlp"], h + adapt("adapter_mlp", mlp(h)), eps)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_adapter_module_is_residual_bottleneck():
  """Adapter(x) = x + up(gelu(down(x))); with up = 0 it is exactly x."""
  x = jax.random.normal(jax.random.key(0), (3, 8))
  mod = layers.Adapter(2)
  p = nn.meta.unbox(mod.init(jax.random.key(1), x))["params"]
  np.testing.assert_array_equal(np.asarray(mod.apply({"params": p}, x)), np.asarray(x))
  p = _randomize(p, "", seed=2)
  want = x + nn.gelu(x @ p["down"]["kernel"] + p["down"]["bias"]) @ p["up"]["kernel"] \
      + p["up"]["bias"]
  np.testing.assert_allclose(np.asarray(mod.apply({"params": p}, x)), np.asarray(want),
                             atol=1e-6)


# ----------------------------------------------------------------------- trainable_mask

@pytest.fixture(scope="module")
def tuned():
  """A BERT-style model with every hook: LoRA, adapters, both heads, embed_ln."""
  return _flat(_init(dict(BERT, lora_rank=2, adapter_dim=4), BATCH_TEXT)[1])


def _parts_rule(mode, path):
  """Expected selection, by path components (independent of the module's regexes)."""
  parts = path.split("/")
  head = parts[0] in ("head", "token_head")
  if mode == "full":
    return True
  if mode == "linear_probe":
    return head
  if mode == "lora":
    return head or any(p.endswith("_lora") for p in parts)
  return head or any(p.startswith(("adapter_", "ln_")) or p == "embed_ln" for p in parts)


@pytest.mark.parametrize("mode", list(peft.MODE_PATTERNS))
def test_trainable_mask_selects_expected_paths(tuned, mode):
  """Each mode selects exactly its paths; count() sums their sizes."""
  params = traverse_util.unflatten_dict(tuned, sep="/")
  mask = _flat(peft.trainable_mask(params, mode))
  assert set(mask) == set(tuned)
  chosen = {k for k, v in mask.items() if v}
  assert chosen == {k for k in tuned if _parts_rule(mode, k)}
  assert peft.count(params, peft.trainable_mask(params, mode)) == sum(
      tuned[k].size for k in chosen)
  assert peft.count(params) == models.param_count(params)
  spot = {"linear_probe": ({"head/kernel", "token_head/bias"},
                           {"pooler_dense/kernel", "encoder/block_0/attn/query_lora/a"}),
          "lora": ({"encoder/block_1/attn/value_lora/b", "head/bias"},
                   {"encoder/block_1/attn/value/kernel", "embed_ln/scale"}),
          "adapter": ({"encoder/block_0/adapter_mlp/up/kernel", "embed_ln/bias",
                       "encoder/block_1/ln_attn/scale", "token_head/kernel"},
                      {"encoder/block_0/mlp/fc1/kernel", "token_embed/embedding",
                       "encoder/block_0/attn/value_lora/a"}),
          "full": ({"token_embed/embedding", "pos_embed/embedding"}, set())}[mode]
  assert spot[0] <= chosen and not spot[1] & chosen


def test_trainable_mask_counts_on_pre_ln_model():
  """Adapter mode on a pre-LN ViT also trains the final LayerNorm; linear_probe only the
  classifier (64 * 3 + 3 = 51 scalars)."""
  _, params = _init(dict(VIT, adapter_dim=4), BATCH_IMAGE)
  chosen = {k for k, v in _flat(peft.trainable_mask(params, "adapter")).items() if v}
  assert "encoder/ln_final/scale" in chosen and "cls_token" not in chosen
  assert peft.count(params, peft.trainable_mask(params, "linear_probe")) == 16 * 3 + 3


def test_extra_patterns_add_to_a_mode(tuned):
  """finetune.trainable regexes add paths to the mode's selection."""
  params = traverse_util.unflatten_dict(tuned, sep="/")
  mask = _flat(peft.trainable_mask(params, "lora", ("pos_embed", r"^pooler_dense/")))
  chosen = {k for k, v in mask.items() if v}
  lora = {k for k in tuned if _parts_rule("lora", k)}
  assert chosen == lora | {"pos_embed/embedding", "pooler_dense/kernel",
                           "pooler_dense/bias"}


def test_trainable_mask_errors():
  """Unknown mode, invalid regex and a mode that selects nothing are ConfigErrors."""
  _, plain = _init(TEXT, BATCH_TEXT)
  with pytest.raises(ConfigError, match=r"Unknown finetune.mode='prefix'; choose one of: "
                                        r"full, linear_probe, lora, adapter"):
    peft.trainable_mask(plain, "prefix")
  with pytest.raises(ConfigError, match=r"finetune.trainable has an invalid regex"):
    peft.trainable_mask(plain, "full", ("head(",))
  with pytest.raises(ConfigError, match=r"'lora' selects no parameter.*lora_rank > 0"):
    peft.trainable_mask({k: v for k, v in plain.items() if k != "head"}, "lora")
  with pytest.raises(ConfigError, match=r"'adapter' selects no parameter.*adapter_dim > 0"):
    peft.trainable_mask({"token_embed": plain["token_embed"]}, "adapter")
  with pytest.raises(ConfigError, match=r"'linear_probe' selects no.*num_classes"):
    peft.trainable_mask({k: v for k, v in plain.items() if k != "head"}, "linear_probe")
  # A head alone is not LoRA or adapter tuning: lora_rank 0 must not quietly train it.
  with pytest.raises(ConfigError, match=r"'lora' but the model has no lora.*lora_rank > 0"):
    peft.trainable_mask(plain, "lora")
  with pytest.raises(ConfigError, match=r"'adapter' but the model has no adapter"):
    peft.trainable_mask(plain, "adapter")


def test_stop_frozen_gradients_zeroes_only_frozen_grads():
  """Gradients through stop_frozen_gradients are zero exactly on the frozen leaves."""
  model, params = _init(dict(TEXT, lora_rank=2), BATCH_TEXT)
  mask = peft.trainable_mask(params, "linear_probe")

  def loss(p):
    p = peft.stop_frozen_gradients(p, mask)
    return jnp.sum(model.apply({"params": p}, BATCH_TEXT)["logits"] ** 2)

  grads = _flat(jax.grad(loss)(params))
  flat_mask = _flat(mask)
  for k, g in grads.items():
    assert bool(np.any(g)) == flat_mask[k], k


# ------------------------------------------------------------------------------ Tuning

def test_tuning_validation():
  """Negative rank/adapter_dim and unknown targets are ConfigErrors naming the key."""
  with pytest.raises(ConfigError, match=r"lora_rank=-1 .* must be >= 0"):
    layers.Tuning(lora_rank=-1)
  with pytest.raises(ConfigError, match=r"adapter_dim=-3 must be >= 0"):
    layers.Tuning(adapter_dim=-3)
  with pytest.raises(ConfigError, match=r"Unknown config.model.lora_targets \['proj'\]; "
                                        r"choose from query, key, value, out, fc1, fc2"):
    layers.Tuning(lora_rank=4, lora_targets=("query", "proj"))
  assert layers.Tuning(lora_rank=2, lora_targets=("out",)).lora("out")
  assert not layers.Tuning(lora_rank=0, lora_targets=("out",)).lora("out")
  assert not layers.Tuning(lora_rank=2).lora("key")   # default targets: query, value


@pytest.mark.parametrize("bad,match", [(dict(lora_rank=-2), "lora_rank=-2"),
                                       (dict(lora_rank=2, lora_targets=("qkv",)), "qkv")])
def test_model_with_bad_tuning_fails_at_build(bad, match):
  """A text model with a negative rank or an unknown target fails with a ConfigError."""
  with pytest.raises(ConfigError, match=match):
    _init(dict(TEXT, **bad), BATCH_TEXT)


def test_tuning_of_reads_model_fields():
  """tuning_of gives a hashable Tuning (tuple targets, float alpha) from model fields."""
  model = models.build_model(dict(TEXT, lora_rank=4, lora_alpha=8, lora_targets=["key"],
                                  adapter_dim=3))
  t = layers.tuning_of(model)
  assert t == layers.Tuning(4, 8.0, ("key",), 3)
  assert isinstance(t.lora_alpha, float) and hash(t) == hash(layers.Tuning(4, 8.0, ("key",), 3))
