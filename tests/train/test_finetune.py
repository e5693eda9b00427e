"""Fine-tuning in the trainer: what each finetune.mode trains, optimizer state only for the
trainable parameters, init_from a Hugging Face folder, resume, and early config errors."""
import itertools
import json
import logging
import os
import shutil

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import traverse_util

from mmjax import data, interop, models, parallel
from mmjax.errors import ConfigError
from mmjax.interop import bundled
from mmjax.train import finetune, loop
from tests.conftest import tiny_vit_config

STEPS = 30
CAPTIONS = "tokenize('caption', 'text', max_len=24)|keep('text', 'text_mask', 'label')"
# Every hook at once, so each mode must leave the others' parameters alone.
TEXT_MODEL = dict(name="text_transformer", vocab_size=260, max_len=24, width=32, depth=2,
                  num_heads=2, mlp_dim=64, num_classes=10, lm_head=False, embed_norm=True,
                  lora_rank=4, lora_targets=("query", "value"), adapter_dim=8)
VIT_FOLDER = dict(name="vit", image_size=28, patch_size=7, channels=1, width=64, depth=2,
                  num_heads=4, mlp_dim=256, layer_norm_eps=1e-12, activation="gelu")
# What trains, by '/'-joined parameter path (written independently of peft's regexes).
EXPECTED = {
    "linear_probe": lambda k: k.startswith("head/"),
    "lora": lambda k: k.startswith("head/") or "_lora/" in k,
    "adapter": lambda k: (k.startswith(("head/", "embed_ln/", "encoder/ln_final/"))
                          or "/adapter_" in k or "/ln_attn/" in k or "/ln_mlp/" in k),
    "full": lambda k: True,
}


def _flat(tree):
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


def _text_config(data_dir, mode, trainable=()):
  from mmjax.config import default_config
  c = default_config()
  c.data.update(dict(data_dir=data_dir, shuffle_buffer=512, preprocess_train=CAPTIONS,
                     preprocess_eval=CAPTIONS))
  c.model = dict(TEXT_MODEL)
  c.objective = dict(name="supervised")
  # Weight decay too: a frozen parameter must not even decay.
  c.optim.update(dict(learning_rate=3e-3, schedule="constant", weight_decay=0.01))
  c.train.update(dict(total_steps=STEPS, batch_size=32))
  c.finetune.update(dict(mode=mode, trainable=trainable))
  return c


@pytest.fixture(scope="module")
def caption_batches(digits_data_dir):
  """The first STEPS train batches of the caption config (read once for every mode)."""
  cfg = _text_config(digits_data_dir, "full")
  it = data.make_train_iterator(cfg.data, batch_size=32, seed=0)
  return list(itertools.islice(it, STEPS))


def _train(config, workdir, batches):
  """(initial state, final state, per-step losses), on host, through the trainer's own
  build_experiment / restore_or_init / compile_steps."""
  exp = loop.build_experiment(config, workdir)
  try:
    train_step, _ = loop.compile_steps(exp)
    state, consumed = loop.restore_or_init(exp)
    assert consumed == 0
    initial = jax.device_get(state)   # before the step donates it
    new_acc = loop.accumulator_factory(exp)
    losses = []
    for batch in batches:
      state, acc = train_step(state, parallel.to_global_batch(batch, exp.mesh,
                                                              exp.batch_sharding), new_acc())
      host = jax.device_get(acc)
      losses.append(float(host["sums"]["loss"]) / float(host["count"]))
  finally:
    exp.checkpointer.close()
  return initial, jax.device_get(state), losses


@pytest.mark.parametrize("mode,trainable", [("lora", ()), ("linear_probe", ()),
                                            ("adapter", ()), ("full", ()),
                                            ("linear_probe", (r"^pos_embed/",))],
                         ids=["lora", "linear_probe", "adapter", "full", "probe+extra"])
def test_mode_trains_exactly_its_parameters(digits_data_dir, caption_batches, tmp_path,
                                            mode, trainable):
  """After 30 steps exactly the mode's parameters changed (the rest bit-identical), the
  loss fell, and the optimizer holds AdamW moments for the trainable ones only."""
  config = _text_config(digits_data_dir, mode, trainable)
  initial, final, losses = _train(config, str(tmp_path / "run"), caption_batches)
  before, after = _flat(initial.params), _flat(final.params)
  expected = {k for k in before if EXPECTED[mode](k) or (trainable and "pos_embed" in k)}
  changed = {k for k in before if not np.array_equal(before[k], after[k])}
  assert changed == expected
  assert np.mean(losses[-5:]) < 0.93 * np.mean(losses[:5]), losses

  n_train = sum(before[k].size for k in expected)
  total = models.param_count(initial.params)
  assert finetune.log_trainable(initial.params, config.finetune) == (n_train, total)
  opt_leaves = jax.tree.leaves(final.opt_state)
  opt_scalars = sum(np.size(x) for x in opt_leaves)
  # mu and nu per trainable scalar, plus a few step counters.
  assert 2 * n_train <= opt_scalars <= 2 * n_train + 8
  masked = [x for x in jax.tree.leaves(final.opt_state,
                                       is_leaf=lambda x: isinstance(x, optax.MaskedNode))
            if isinstance(x, optax.MaskedNode)]
  if mode == "full" and not trainable:
    assert n_train == total and not masked
  else:
    assert n_train < total / 2
    # One MaskedNode per frozen leaf in each of AdamW's two moment trees.
    assert len(masked) == 2 * (len(before) - len(expected))


def test_log_trainable_logs_counts(caplog):
  """log_trainable logs 'Trainable parameters: N of M (P%)' and returns (N, M)."""
  from ml_collections import ConfigDict
  params = {"head": {"kernel": np.zeros((4, 3)), "bias": np.zeros(3)},
            "encoder": {"kernel": np.zeros((4, 4))}}
  with caplog.at_level(logging.INFO):
    got = finetune.log_trainable(params, ConfigDict(dict(mode="linear_probe", trainable=())))
    full = finetune.log_trainable(params, ConfigDict(dict(mode="full", trainable=())))
  assert got == (15, 31) and full == (31, 31)
  assert "Trainable parameters: 15 of 31 (48.39%), finetune.mode=linear_probe." in caplog.text
  assert "Trainable parameters: 31 of 31 (100.00%), finetune.mode=full." in caplog.text


def test_full_mode_keeps_the_plain_optimizer():
  """mode='full' without extra patterns trains everything through the unwrapped tx;
  extra patterns or another mode wrap it."""
  from ml_collections import ConfigDict
  tx = optax.adam(1e-3)
  params = {"head": {"kernel": np.zeros((2, 2))}, "body": {"kernel": np.zeros((2, 2))}}
  full = ConfigDict(dict(mode="full", trainable=()))
  assert finetune.trainable_fn(full) is None
  assert finetune.freeze_optimizer(tx, full, params) is tx
  probe = ConfigDict(dict(mode="linear_probe", trainable=()))
  wrapped = finetune.freeze_optimizer(tx, probe, params)
  assert wrapped is not tx
  state = wrapped.init(params)
  grads = {"head": {"kernel": np.ones((2, 2))}, "body": {"kernel": np.ones((2, 2))}}
  updates, _ = wrapped.update(grads, state, params)
  assert np.all(np.asarray(updates["head"]["kernel"]) != 0)
  assert not np.any(np.asarray(updates["body"]["kernel"]))
  with pytest.raises(ConfigError, match="Unknown finetune.mode='bogus'"):
    finetune.trainable_fn(ConfigDict(dict(mode="bogus", trainable=())))


# ------------------------------------------------------------------------------ init_from

def _vit_config(data_dir, folder, **train):
  c = tiny_vit_config(data_dir, **train)
  c.model = dict(VIT_FOLDER, num_classes=10)
  c.finetune.update(dict(init_from=folder, mode="linear_probe"))
  return c


def _checkpoint_params(workdir, step):
  with ocp.PyTreeCheckpointer() as ckptr:
    state = ckptr.restore(os.path.join(workdir, "checkpoints", str(step), "state"))
  return _flat(state["params"])


def _no_checkpoint(workdir):
  path = os.path.join(workdir, "checkpoints")
  return not os.path.isdir(path) or not os.listdir(path)


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
  return bundled.random_vit_folder(str(tmp_path_factory.mktemp("hf") / "vit"))


def test_init_from_loads_encoder_fresh_head_and_resume_ignores_it(
    digits_data_dir, vit_folder, tmp_path, caplog):
  """Step 0 holds the folder's encoder and a fresh head; linear_probe keeps the encoder
  exactly; a resumed run restores its checkpoint, not the (since changed) folder."""
  folder = str(tmp_path / "vit")
  shutil.copytree(vit_folder, folder)
  workdir = str(tmp_path / "run")
  config = _vit_config(digits_data_dir, folder, total_steps=2, checkpoint_every=2,
                       log_every=1)
  _, pretrained = interop.load_pretrained(folder, num_classes=10)
  pretrained = _flat(pretrained)
  assert not any(k.startswith("head/") for k in _flat(
      interop.load_pretrained(folder)[1]))   # the folder has no classifier

  exp = loop.build_experiment(config, workdir)
  try:
    state, _ = loop.restore_or_init(exp)
    step0, fresh = _flat(state.params), _flat(exp.init_state().params)
  finally:
    exp.checkpointer.close()
  assert set(step0) == set(pretrained)
  for k in step0:
    if k.startswith("head/"):
      np.testing.assert_array_equal(step0[k], fresh[k], err_msg=k)   # a fresh head
    else:
      np.testing.assert_array_equal(step0[k], pretrained[k], err_msg=k)
  assert not np.array_equal(step0["pos_embed/embedding"], fresh["pos_embed/embedding"])

  with caplog.at_level(logging.INFO):
    loop.train_and_evaluate(config, workdir)
  n_head = 64 * 10 + 10
  total = sum(v.size for v in step0.values())
  assert (f"Trainable parameters: {n_head} of {total:,} ("
          f"{100 * n_head / total:.2f}%), finetune.mode=linear_probe.") in caplog.text
  assert f"Initialised from {folder}" in caplog.text
  step2 = _checkpoint_params(workdir, 2)
  for k in step2:
    same = np.array_equal(step2[k], step0[k])
    assert same != k.startswith("head/"), k   # only the head trained

  # Another model's weights in the folder now: a resumed run must not read them.
  other = bundled.random_vit_folder(str(tmp_path / "other"), seed=1)
  shutil.copy(os.path.join(other, "model.safetensors"), folder)
  caplog.clear()
  config.train.total_steps = 4
  with caplog.at_level(logging.INFO):
    loop.train_and_evaluate(config, workdir)
  assert "Resumed from the checkpoint at step 2" in caplog.text
  assert "Initialised from" not in caplog.text
  step4 = _checkpoint_params(workdir, 4)
  for k in step4:
    if k.startswith("head/"):
      assert not np.array_equal(step4[k], step2[k])
    else:
      np.testing.assert_array_equal(step4[k], step0[k], err_msg=k)
  reloaded = _flat(interop.load_pretrained(folder, num_classes=10)[1])
  assert not np.array_equal(reloaded["pos_embed/embedding"], step0["pos_embed/embedding"])
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    steps = [r["step"] for r in map(json.loads, f) if r["split"] == "train"]
  assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("case", ["missing_folder", "wrong_width", "defaults_differ",
                                  "unknown_mode"])
def test_bad_finetune_settings_fail_before_training(digits_data_dir, vit_folder, tmp_path,
                                                   case):
  """A missing folder, a config.model that does not fit it (also through keys it leaves
  at defaults that differ from the folder's), or an unknown mode is a ConfigError before
  any training, and no checkpoint is written."""
  workdir = str(tmp_path / "run")
  config = _vit_config(digits_data_dir, vit_folder, total_steps=2, checkpoint_every=1)
  if case == "missing_folder":
    config.finetune.init_from = str(tmp_path / "nowhere")
    match = r"nowhere' is not a Hugging Face checkpoint folder \(no config.json\)"
  elif case == "wrong_width":
    config.model.width = 32
    match = r"model.width=32 but the checkpoint has 64"
  elif case == "defaults_differ":   # the ViT defaults: gelu_tanh, eps 1e-6
    config.model = {k: v for k, v in config.model.items()
                    if k not in ("activation", "layer_norm_eps")}
    match = (r"model.activation='gelu_tanh' but the checkpoint has 'gelu', "
             r"model.layer_norm_eps=1e-06 but the checkpoint has 1e-12")
  else:
    config.finetune.mode = "prefix_tuning"
    match = r"Unknown finetune.mode='prefix_tuning'; choose one of: full, linear_probe"
  with pytest.raises(ConfigError, match=match):
    loop.train_and_evaluate(config, workdir)
  assert _no_checkpoint(workdir)
  assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))
