"""Objectives end to end: config handling, hand-computed losses on tiny stand-in modules,
padding, the composite, the prepare/embed/loss_from_inputs seam, and training plumbing
through the real `mmjax.models`."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mmjax.errors import ConfigError
from mmjax.objectives import OBJECTIVES, losses, make_objective


# ------------------------------------------------------------- stand-in modules
# Minimal modules that follow the model contract (embed/encode seam, dict outputs) and
# whose outputs are simple enough to compute losses by hand.

class LinearClassifier(nn.Module):
  """logits = flatten(image) @ kernel, image [B, 1, 1, 3]; pooled = flatten(image)."""
  num_classes: int = 3

  def setup(self):
    self.kernel = self.param("kernel", nn.initializers.normal(1.0), (3, self.num_classes))

  def embed(self, batch, *, train=False):
    return {"image": batch["image"]}

  def encode(self, inputs, *, train=False):
    x = inputs["image"].reshape(inputs["image"].shape[0], -1)
    return {"pooled": x, "logits": x @ self.kernel}

  def initialize(self, batch):
    return self.encode(self.embed(batch))


class LookupLM(nn.Module):
  """lm_logits[b, t] = table[text[b, t]]: one-hot token embeddings times a table."""
  vocab_size: int = 5
  causal: bool = True

  def setup(self):
    self.table = self.param("table", nn.initializers.normal(1.0),
                            (self.vocab_size, self.vocab_size))

  def embed(self, batch, *, train=False):
    return {"text": jax.nn.one_hot(batch["text"], self.vocab_size),
            "text_mask": batch["text_mask"]}

  def encode(self, inputs, *, train=False):
    return {"lm_logits": inputs["text"] @ self.table}

  def initialize(self, batch):
    return self.encode(self.embed(batch))


class TinyMAE(nn.Module):
  """Images [B, 4, 4, 1] as N=4 patches of P=4 pixels; `mae` hides random patches
  (the 'mask' stream) and predicts all patches from the visible ones with a Dense."""
  num_classes: int = 3

  def setup(self):
    self.decoder = nn.Dense(4)
    self.head = nn.Dense(self.num_classes)

  def _patches(self, image):
    b = image.shape[0]
    return image.reshape(b, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(b, 4, 4)

  def embed(self, batch, *, train=False):
    return {"image": batch["image"]}

  def encode(self, inputs, *, train=False):
    pooled = self.decoder(self._patches(inputs["image"])).mean(axis=1)
    return {"pooled": pooled, "logits": self.head(pooled)}

  def mae(self, inputs, *, train=False, mask_ratio=0.75):
    patches = self._patches(inputs["image"])
    b, n = patches.shape[:2]
    keep = int(n * (1 - mask_ratio))
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(self.make_rng("mask"), (b, n)), 1), 1)
    mask = (rank >= keep).astype(jnp.float32)
    pred = self.decoder(patches * (1 - mask)[..., None])
    return {"pred": pred, "target": patches, "mask": mask}

  def initialize(self, batch):
    self.mae(self.embed(batch))
    return self.encode(self.embed(batch))


class TinyBN(nn.Module):
  """flatten(image) -> Dense(4) -> BatchNorm = pooled = projection; logits = Dense(3)."""

  def setup(self):
    self.dense = nn.Dense(4)
    self.bn = nn.BatchNorm(momentum=0.9)
    self.head = nn.Dense(3)

  def embed(self, batch, *, train=False):
    return {"image": batch["image"]}

  def encode(self, inputs, *, train=False):
    x = self.dense(inputs["image"].reshape(inputs["image"].shape[0], -1))
    p = self.bn(x, use_running_average=not train)
    return {"pooled": p, "projection": p, "logits": self.head(p)}

  def initialize(self, batch):
    return self.encode(self.embed(batch))


def _init(model, batch, seed=0):
  variables = model.init({"params": jax.random.key(seed), "mask": jax.random.key(1)},
                         batch, method="initialize")
  variables = dict(variables)
  return variables.pop("params"), variables


def _images(b, h, w, c, seed=0):
  return jax.random.uniform(jax.random.key(seed), (b, h, w, c))


RNG = jax.random.key(42)


# ------------------------------------------------------------------- configs
def test_registry_names():
  assert OBJECTIVES.names() == ["captioning", "clm", "contrastive", "dialogue",
                               "distillation", "group_balanced", "group_dro", "mae", "mlm",
                               "regression", "simclr", "sum", "supervised",
                               "token_classification"]


def test_unknown_name_lists_choices():
  with pytest.raises(ConfigError, match="Choose one of: captioning, clm, contrastive, "
                                        "dialogue, distillation, group_balanced, group_dro, mae, mlm, "
                                        "regression, simclr, sum"):
    make_objective({"name": "mea"}, LinearClassifier())
  with pytest.raises(ConfigError, match="name is missing"):
    make_objective({"label_smoothing": 0.1}, LinearClassifier())


def test_unknown_option_names_the_key():
  with pytest.raises(ConfigError, match="label_smothing"):
    make_objective({"name": "supervised", "label_smothing": 0.1}, LinearClassifier())
  with pytest.raises(ConfigError, match=r"mask_rato.*objective\.terms\.mae.*weight"):
    make_objective({"name": "sum", "terms": {"mae": {"mask_rato": 0.5}}}, TinyMAE())
  with pytest.raises(ConfigError, match="Choose one of"):
    make_objective({"name": "sum", "terms": {"cls": {"name": "supervisd"}}}, TinyMAE())


def test_config_dict_and_bad_values():
  cfg = ml_collections.ConfigDict({"name": "simclr", "temperature": 0.1,
                                   "crop_scale": [0.3, 1.0]})
  obj = make_objective(cfg, TinyBN())
  assert obj.temperature == 0.1 and obj.crop_scale == (0.3, 1.0)
  with pytest.raises(ConfigError, match="temperature"):
    make_objective({"name": "simclr", "temperature": 0.0}, TinyBN())
  with pytest.raises(ConfigError, match="mask_ratio"):
    make_objective({"name": "mae", "mask_ratio": 1.0}, TinyMAE())
  with pytest.raises(ConfigError, match="`mae` method"):
    make_objective({"name": "mae"}, LinearClassifier())
  with pytest.raises(ConfigError, match="causal=True"):
    make_objective({"name": "clm"}, LookupLM(causal=False))
  with pytest.raises(ConfigError, match="causal=False"):
    make_objective({"name": "mlm"}, LookupLM(causal=True))
  # mlm takes vocab_size from the model unless given.
  assert make_objective({"name": "mlm"}, LookupLM(vocab_size=12, causal=False)).vocab_size == 12


def test_missing_output_is_a_config_error():
  model = LookupLM()
  batch = {"text": jnp.array([[1, 4]]), "text_mask": jnp.ones((1, 2)), "label": jnp.array([0])}
  params, state = _init(model, batch)
  with pytest.raises(ConfigError, match="'logits'"):
    make_objective({"name": "supervised"}, model)(params, batch, RNG, model_state=state,
                                                  train=False)


# ------------------------------------------------------- hand-computed losses
def _lse(xs):
  return math.log(sum(math.exp(x) for x in xs))


def test_supervised_by_hand_with_padding():
  model = LinearClassifier()
  params = {"kernel": jnp.eye(3)}  # logits = the image's 3 values
  batch = {"image": jnp.array([[1.0, 2.0, 3.0], [1.0, 0.0, -1.0], [9.0, 0.0, 0.0]]
                              ).reshape(3, 1, 1, 3),
           "label": jnp.array([2, 1, 1]), "mask": jnp.array([1.0, 1.0, 0.0])}
  loss, (metrics, state) = make_objective({"name": "supervised"}, model)(
      params, batch, RNG, model_state={}, train=True)
  expected = ((_lse([1, 2, 3]) - 3) + (_lse([1, 0, -1]) - 0)) / 2
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-6)
  assert float(metrics["accuracy"]) == pytest.approx(0.5)  # the padded row is ignored
  assert state == {}
  # Label smoothing 0.3: targets [0.1, 0.1, 0.8] and [0.1, 0.8, 0.1].
  smoothed = make_objective({"name": "supervised", "label_smoothing": 0.3}, model)(
      params, batch, RNG, model_state={}, train=False)[0]
  ce = lambda z, t: -sum(ti * (zi - _lse(z)) for zi, ti in zip(z, t))
  expected = (ce([1, 2, 3], [0.1, 0.1, 0.8]) + ce([1, 0, -1], [0.1, 0.8, 0.1])) / 2
  assert float(smoothed) == pytest.approx(expected, rel=1e-6)


def test_clm_shift_and_masking_by_hand():
  model = LookupLM(vocab_size=5)
  table = np.zeros((5, 5), np.float32)
  table[1] = [0.0, 0.5, 1.0, -1.0, 2.0]  # position 0 (token 1) predicts token 4
  table[4] = [1.0, 0.0, 0.0, 0.5, 0.0]  # position 1 (token 4) predicts token 3
  table[3] = [0.0, 0.0, 9.0, 0.0, 0.0]  # position 2 predicts padding: ignored
  params = {"table": jnp.asarray(table)}
  batch = {"text": jnp.array([[1, 4, 3, 0], [1, 1, 1, 1]]),
           "text_mask": jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]]),
           "mask": jnp.array([1.0, 0.0])}  # the second sequence is padding
  loss, (metrics, _) = make_objective({"name": "clm"}, model)(
      params, batch, RNG, model_state={}, train=False)
  nll_0 = _lse([0.0, 0.5, 1.0, -1.0, 2.0]) - 2.0
  nll_1 = _lse([1.0, 0.0, 0.0, 0.5, 0.0]) - 0.5
  expected = (nll_0 + nll_1) / 2
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  assert float(metrics["perplexity"]) == pytest.approx(math.exp(expected), rel=1e-6)
  assert float(metrics["token_accuracy"]) == pytest.approx(0.5)  # right, then wrong


def test_mlm_loss_is_on_selected_positions_only():
  model = LookupLM(vocab_size=12, causal=False)
  batch = {"text": jax.random.randint(jax.random.key(0), (4, 32), 4, 12).at[:, 0].set(1),
           "text_mask": jnp.ones((4, 32), jnp.int32).at[:, 28:].set(0)}
  batch["text"] = jnp.where(batch["text_mask"] > 0, batch["text"], 0)
  params, _ = _init(model, batch)
  obj = make_objective({"name": "mlm", "mask_prob": 0.3}, model)
  prepared = obj.prepare(batch, RNG)
  weights = np.asarray(prepared["_mlm_weights"])
  assert weights[:, 0].sum() == 0 and weights[:, 28:].sum() == 0 and weights.sum() > 10
  np.testing.assert_array_equal(prepared["_mlm_targets"], batch["text"])
  # By hand: logits at each position are table[masked token]; average CE where selected.
  table = np.asarray(params["table"], np.float64)
  masked = np.asarray(prepared["text"])
  targets = np.asarray(batch["text"])
  nll, correct = [], []
  for b, t in zip(*np.nonzero(weights)):
    z = table[masked[b, t]]
    nll.append(np.log(np.exp(z).sum()) - z[targets[b, t]])
    correct.append(float(np.argmax(z) == targets[b, t]))
  loss, (metrics, _) = obj(params, batch, RNG, model_state={}, train=False)
  assert float(loss) == pytest.approx(np.mean(nll), rel=1e-5)
  assert float(metrics["accuracy"]) == pytest.approx(np.mean(correct), abs=1e-6)


# ------------------------------------------------------------ padding (mask)
def _padded_pair(batch, real, seed):
  """Two batches equal on the first `real` examples, different elsewhere, mask 1/0."""
  b = next(iter(batch.values())).shape[0]
  mask = (jnp.arange(b) < real).astype(jnp.float32)
  other = {}
  for k, v in batch.items():
    key = jax.random.key(seed)
    if v.dtype.kind == "f":
      noise = jax.random.uniform(key, v.shape)
    else:  # labels in [0, 3), tokens in [4, 12): valid for the stand-ins
      lo, hi = (0, 3) if k == "label" else (4, 12)
      noise = jax.random.randint(key, v.shape, lo, hi).astype(v.dtype)
    keep = mask.reshape((b,) + (1,) * (v.ndim - 1)) > 0
    other[k] = jnp.where(keep, v, noise)
  return {**batch, "mask": mask}, {**other, "mask": mask}


@pytest.mark.parametrize("config,model,batch", [
    ({"name": "supervised"}, LinearClassifier(),
     {"image": _images(4, 1, 1, 3), "label": jnp.array([0, 1, 2, 0])}),
    ({"name": "clm"}, LookupLM(vocab_size=12),
     {"text": jnp.tile(jnp.arange(4, 12), (4, 1)), "text_mask": jnp.ones((4, 8), jnp.int32)}),
    ({"name": "mlm", "mask_prob": 0.5}, LookupLM(vocab_size=12, causal=False),
     {"text": jnp.tile(jnp.arange(4, 12), (4, 1)), "text_mask": jnp.ones((4, 8), jnp.int32)}),
    ({"name": "mae", "mask_ratio": 0.5}, TinyMAE(), {"image": _images(4, 4, 4, 1)}),
    ({"name": "simclr"}, TinyBN(), {"image": _images(4, 4, 4, 3)}),
    ({"name": "sum", "terms": {"mae": {}, "supervised": {"weight": 0.5}}}, TinyMAE(),
     {"image": _images(4, 4, 4, 1), "label": jnp.array([0, 1, 2, 0])}),
], ids=["supervised", "clm", "mlm", "mae", "simclr", "sum"])
def test_padded_examples_do_not_change_the_loss(config, model, batch):
  a, b = _padded_pair(batch, real=2, seed=7)
  params, state = _init(model, a)
  obj = jax.jit(make_objective(config, model), static_argnames="train")
  loss_a, (metrics_a, _) = obj(params, a, RNG, model_state=state, train=False)
  loss_b, (metrics_b, _) = obj(params, b, RNG, model_state=state, train=False)
  assert np.isfinite(float(loss_a))
  assert float(loss_a) == pytest.approx(float(loss_b), rel=1e-5, abs=1e-6)
  for k in metrics_a:
    assert float(metrics_a[k]) == pytest.approx(float(metrics_b[k]), rel=1e-5, abs=1e-6), k
  # Sanity: counted as real (mask all ones), the differing rows do change the loss.
  ones = lambda d: {**d, "mask": jnp.ones_like(d["mask"])}
  assert float(obj(params, ones(a), RNG, model_state=state, train=False)[0]) != \
      pytest.approx(float(obj(params, ones(b), RNG, model_state=state, train=False)[0]))


# ----------------------------------------------------------------- composite
def test_sum_is_the_weighted_sum_of_its_terms():
  model = TinyMAE()
  batch = {"image": _images(4, 4, 4, 1), "label": jnp.array([0, 1, 2, 0])}
  params, state = _init(model, batch)
  terms = {"mae": {"weight": 1.0, "mask_ratio": 0.75},
           "cls": {"name": "supervised", "weight": 0.5, "label_smoothing": 0.1}}
  obj = make_objective({"name": "sum", "terms": terms}, model)
  loss, (metrics, _) = obj(params, batch, RNG, model_state=state, train=True)
  rngs = obj.term_rngs(RNG)
  mae_loss = make_objective({"name": "mae", "mask_ratio": 0.75}, model)(
      params, batch, rngs["mae"], model_state=state, train=True)[0]
  cls_loss = make_objective({"name": "supervised", "label_smoothing": 0.1}, model)(
      params, batch, rngs["cls"], model_state=state, train=True)[0]
  assert float(loss) == pytest.approx(1.0 * float(mae_loss) + 0.5 * float(cls_loss), rel=1e-6)
  assert sorted(metrics) == ["cls/accuracy", "cls/loss", "loss", "mae/loss"]
  assert float(metrics["mae/loss"]) == pytest.approx(float(mae_loss), rel=1e-6)
  assert float(metrics["loss"]) == pytest.approx(float(loss))


def test_sum_terms_get_distinct_rngs():
  model = TinyMAE()
  batch = {"image": _images(4, 4, 4, 1)}
  params, state = _init(model, batch)
  obj = make_objective({"name": "sum", "terms": {"a": {"name": "mae"},
                                                 "b": {"name": "mae"}}}, model)
  _, (metrics, _) = obj(params, batch, RNG, model_state=state, train=False)
  assert float(metrics["a/loss"]) != pytest.approx(float(metrics["b/loss"]))


def test_sum_threads_batch_norm_state_through_terms():
  model = TinyBN()
  batch = {"image": _images(4, 2, 2, 3), "label": jnp.array([0, 1, 2, 0])}
  params, state = _init(model, batch)
  obj = make_objective({"name": "sum", "terms": {"a": {"name": "supervised"},
                                                 "b": {"name": "supervised"}}}, model)
  _, (_, new_state) = obj(params, batch, RNG, model_state=state, train=True)
  single = make_objective({"name": "supervised"}, model)
  once = single(params, batch, RNG, model_state=state, train=True)[1][1]
  twice = single(params, batch, RNG, model_state=once, train=True)[1][1]
  jax.tree.map(np.testing.assert_allclose, new_state, twice)
  assert not np.allclose(once["batch_stats"]["bn"]["mean"], twice["batch_stats"]["bn"]["mean"])


# ------------------------------------------------------------- simclr views
def test_simclr_both_views_go_through_one_batch_norm_call():
  model = TinyBN()
  batch = {"image": _images(4, 4, 4, 3)}
  params, state = _init(model, batch)
  obj = make_objective({"name": "simclr"}, model)
  views = obj.prepare(batch, RNG)["image"]
  assert views.shape == (8, 4, 4, 3)
  _, (metrics, new_state) = obj(params, batch, RNG, model_state=state, train=True)
  # One BatchNorm update over all 2B views: mean <- 0.9 * 0 + 0.1 * mean(dense(views)).
  dense = views.reshape(8, -1) @ params["dense"]["kernel"] + params["dense"]["bias"]
  np.testing.assert_allclose(new_state["batch_stats"]["bn"]["mean"],
                             0.1 * dense.mean(axis=0), rtol=1e-5, atol=1e-7)
  assert 0.0 <= float(metrics["contrastive_accuracy"]) <= 1.0
  # Eval mode: the state is returned unchanged.
  _, (_, same) = obj(params, batch, RNG, model_state=state, train=False)
  jax.tree.map(np.testing.assert_array_equal, same, state)


# ------------------------------------------------- the adversarial seam
@pytest.mark.parametrize("config,model,batch", [
    ({"name": "mlm", "mask_prob": 0.5}, LookupLM(vocab_size=12, causal=False),
     {"text": jnp.tile(jnp.arange(4, 12), (2, 1)), "text_mask": jnp.ones((2, 8), jnp.int32)}),
    ({"name": "sum", "terms": {"mae": {"mask_ratio": 0.5}, "supervised": {}}}, TinyMAE(),
     {"image": _images(2, 4, 4, 1), "label": jnp.array([0, 2])}),
], ids=["mlm", "sum"])
def test_loss_from_inputs_matches_the_loss_fn_and_has_input_grads(config, model, batch):
  params, state = _init(model, batch)
  obj = make_objective(config, model)
  full = jax.jit(obj, static_argnames="train")(params, batch, RNG, model_state=state,
                                               train=False)[0]
  prepared = obj.prepare(batch, RNG)
  inputs = obj.embed(params, prepared, RNG, model_state=state, train=False)
  loss_of_inputs = lambda x: obj.loss_from_inputs(params, x, prepared, RNG,
                                                  model_state=state, train=False)[0]
  assert float(loss_of_inputs(inputs)) == pytest.approx(float(full), rel=1e-6)
  # An attack perturbs the float leaves (pixels, token embeddings), not e.g. text_mask.
  leaves, treedef = jax.tree.flatten(inputs)
  is_float = [jnp.issubdtype(x.dtype, jnp.floating) for x in leaves]

  def loss_of_float_leaves(floats):
    it = iter(floats)
    return loss_of_inputs(jax.tree.unflatten(
        treedef, [next(it) if f else x for x, f in zip(leaves, is_float)]))

  # Jitted: an eager backward pass compiles every op separately (slow on CPU).
  grads = jax.jit(jax.grad(loss_of_float_leaves))([x for x, f in zip(leaves, is_float) if f])
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
  assert all(float(jnp.abs(g).max()) > 0 for g in grads)


# ------------------------------------------------ plumbing through mmjax.models
_VIT = dict(name="vit", image_size=8, patch_size=4, channels=3, width=32, depth=1,
            num_heads=2, mlp_dim=64, decoder_width=32, decoder_depth=1, decoder_heads=2,
            projection_dim=16, num_classes=10)
_TEXT = dict(name="text_transformer", vocab_size=260, max_len=16, width=32, depth=1,
             num_heads=2, mlp_dim=64)


def _image_batch(b, h, c):
  return {"image": _images(b, h, h, c), "label": jnp.arange(b) % 10}


def _text_batch(b=4, t=16):
  tokens = jax.random.randint(jax.random.key(3), (b, t), 4, 260).at[:, 0].set(1)
  return {"text": tokens, "text_mask": jnp.ones((b, t), jnp.int32)}


# name -> (model config, objective config, batch, SGD learning rate).
PLUMBING = {
    "supervised-preact_resnet18": ({"name": "preact_resnet18"},
                                   {"name": "supervised", "label_smoothing": 0.1},
                                   lambda: _image_batch(4, 8, 3), 0.01),
    "clm-text_transformer": ({**_TEXT, "causal": True}, {"name": "clm"}, _text_batch, 0.5),
    "mlm-text_transformer": ({**_TEXT, "causal": False}, {"name": "mlm", "mask_prob": 0.3},
                             _text_batch, 0.5),
    "mae-vit": (_VIT, {"name": "mae"}, lambda: _image_batch(4, 8, 3), 0.1),
    "simclr-vit": (_VIT, {"name": "simclr"}, lambda: _image_batch(4, 8, 3), 0.1),
    "sum-vit": (_VIT, {"name": "sum", "terms": {"mae": {"mask_ratio": 0.75},
                                                "supervised": {"weight": 0.5}}},
                lambda: _image_batch(4, 8, 3), 0.1),
}


def _quick_variables(models, model, batch):
  """Variables with the shapes `init_variables` gives, filled by numpy.

  The real init compiles XLA RNG code for every parameter (5-10 s per model on 2 CPU
  cores, more than the rest of a case); the objectives only need sensible values:
  normal(0, 1/fan_in) weights, zero biases and means, unit scales and variances.
  """
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    if leaf.ndim == 1:
      value = np.ones(leaf.shape) if name in ("['scale']", "['var']") else np.zeros(leaf.shape)
    else:
      fan_in = max(int(np.prod(leaf.shape[:-1])), 1)
      value = rng.normal(size=leaf.shape) / np.sqrt(fan_in)
    return jnp.asarray(value, leaf.dtype)

  return dict(jax.tree_util.tree_map_with_path(fill, models.abstract_variables(model, batch)))


@pytest.mark.parametrize("name", list(PLUMBING))
def test_plumbing_through_real_models(name):
  models = pytest.importorskip("mmjax.models")
  model_config, objective_config, make_batch, lr = PLUMBING[name]
  model = models.build_model(model_config)
  batch = make_batch()
  variables = _quick_variables(models, model, batch)
  params = variables.pop("params")
  state = variables
  loss_fn = make_objective(objective_config, model)
  step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), static_argnames="train")

  (loss, (metrics, new_state)), grads = step(params, batch, RNG, model_state=state,
                                             train=True)
  # Checks and updates in numpy: eager jnp ops would compile once per parameter shape.
  assert np.isfinite(float(loss)) and "loss" in metrics
  assert all(np.isfinite(float(v)) and v.shape == () for v in metrics.values())
  leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(g).all() for g in leaves)
  assert sum(float(np.sum(g * g)) for g in leaves) > 0
  if state:  # BatchNorm: running statistics move when training, and only then.
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), state, new_state)
    assert any(jax.tree.leaves(changed))
    _, (_, eval_state) = jax.jit(loss_fn, static_argnames="train")(
        params, batch, RNG, model_state=state, train=False)
    jax.tree.map(np.testing.assert_array_equal, eval_state, state)

  # A few SGD steps on a fixed batch (and fixed rng, so a fixed function) lower the loss.
  first = float(loss)
  for _ in range(4):
    params = jax.tree.map(lambda p, g: np.asarray(p) - lr * np.asarray(g), params, grads)
    (loss, (_, state)), grads = step(params, batch, RNG, model_state=state, train=True)
  assert float(loss) < first
