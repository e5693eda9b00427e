"""AdaLoRA in the trainer: the cubic budget schedule hits b0, its midpoint and b_T at the
steps it names; a short run shrinks every adapter's rank without anyone calling the
allocator, to exactly the final budget, logs the ranks (metrics + JSON), and merges into
the base weights; the orthogonality penalty is its formula; a budget above the initial
rank is refused before anything is built."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models
from mmjax.errors import ConfigError
from mmjax.models import adalora, peft
from mmjax.train import loop
from tests.train.test_finetune import CAPTIONS

STEPS, RANK, TARGET = 24, 4, 2
MODEL = dict(name="text_transformer", vocab_size=260, max_len=24, width=32, depth=2,
             num_heads=2, mlp_dim=64, num_classes=10, lm_head=False, embed_norm=True,
             lora_rank=RANK, lora_targets=("query", "value"), adalora=True)


def _config(data_dir, **adalora_options):
  from mmjax.config import default_config
  c = default_config()
  c.data.update(dict(data_dir=data_dir, shuffle_buffer=512, preprocess_train=CAPTIONS,
                     preprocess_eval=CAPTIONS))
  c.model = dict(MODEL)
  c.objective = dict(name="supervised")
  c.optim.update(dict(learning_rate=1e-2, schedule="constant"))
  c.train.update(dict(total_steps=STEPS, batch_size=16, log_every=4, eval_every=0,
                      checkpoint_every=0, plots=False))
  del c.evals["loss"]   # one compile less: the train metrics and files are under test
  c.finetune.update(dict(mode="lora"))
  c.finetune.adalora.update(dict(target_rank=TARGET, init_warmup=4, final_warmup=8,
                                 mask_interval=2))
  c.finetune.adalora.update(adalora_options)
  return c


def test_budget_schedule_hits_its_targets():
  s = adalora.Settings(init_rank=8, target_rank=2, total_steps=100, init_warmup=10,
                       final_warmup=20)
  n = 12   # adapted matrices: b0 = 96, b_T = 24
  budget = lambda t: int(adalora.budget_at(t, s, n))
  assert [budget(t) for t in (0, 10)] == [96, 96]             # warmup: full budget
  assert budget(45) == int(72 * 0.5 ** 3 + 24) == 33            # halfway: cubic
  assert [budget(t) for t in (80, 81, 100)] == [24, 24, 24]     # final phase
  mid = [budget(t) for t in range(10, 81)]
  assert all(a >= b for a, b in zip(mid, mid[1:]))              # never grows


def test_orthogonality_penalty_is_the_formula():
  rng = np.random.default_rng(0)
  a, b, e = rng.normal(size=(6, 3)), rng.normal(size=(3, 5)), rng.normal(size=3)
  scanned_a, scanned_b = rng.normal(size=(2, 4, 2, 3)), rng.normal(size=(2, 3, 7))
  params = {"q_lora": {"a": a, "e": e, "b": b},
            "blocks": {"out_lora": {"a": scanned_a, "e": np.ones((2, 3)), "b": scanned_b}},
            "plain": {"kernel": np.ones((3, 3))}}
  frob = lambda m: float(np.sum(m ** 2))
  eye = np.eye(3)
  want = frob(a.T @ a - eye) + frob(b @ b.T - eye)
  for layer in range(2):
    p = scanned_a[layer].reshape(8, 3)
    want += frob(p.T @ p - eye) + frob(scanned_b[layer] @ scanned_b[layer].T - eye)
  got = float(adalora.orthogonality_penalty(jax.tree.map(jnp.asarray, params)))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_budget_above_the_initial_rank_is_refused(digits_data_dir, tmp_path):
  config = _config(digits_data_dir, target_rank=RANK + 1)
  with pytest.raises(ConfigError, match=r"target_rank=5 must be in \[1, model.lora_rank=4\]"):
    loop.build_experiment(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_settings_the_allocation_cannot_serve_are_refused(digits_data_dir):
  config = _config(digits_data_dir)
  config.finetune.adalora.final_warmup = STEPS
  with pytest.raises(ConfigError, match="leaves no step"):
    adalora.settings_from_config(config)
  config = _config(digits_data_dir)
  config.privacy.enabled = True
  with pytest.raises(ConfigError, match="cannot train with privacy.enabled"):
    adalora.settings_from_config(config)


def test_trainer_shrinks_ranks_to_the_budget_and_merges(digits_data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(_config(digits_data_dir), workdir)
  with open(os.path.join(workdir, "adalora_ranks.json")) as f:
    report = json.load(f)
  ranks = report["ranks"]
  # 2 layers x (query, value) of a scanned-or-not encoder: 4 adapted matrices.
  per_matrix = [r for layers in ranks.values() for r in layers]
  assert len(per_matrix) == 4 and report["budget"] == 4 * TARGET
  assert sum(per_matrix) == 4 * TARGET and max(per_matrix) <= RANK
  assert min(per_matrix) < RANK   # they shrank, unevenly or not
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  logged = [r for r in rows if r.get("split") == "adalora"]
  totals = [r["adalora/total_rank"] for r in logged]
  assert totals[0] == 4 * RANK and totals[-1] == 4 * TARGET, totals
  # The allocation as logged only shrinks (pruned Λ that regrow between reallocations
  # are not counted back in).
  assert all(a >= b for a, b in zip(totals, totals[1:])), totals
  assert any(k.startswith("adalora/rank/") for k in logged[-1])
  assert result["train/adalora/orth_reg"] > 0
  # Merged into the base weights: the same outputs from a model without adapters.
  exp = loop.build_experiment(_config(digits_data_dir), workdir, "eval")
  try:
    state, _, _ = exp.checkpointer.restore_latest(exp.abstract_state)
  finally:
    exp.close()
  batch = {"text": jnp.arange(48, dtype=jnp.int32).reshape(2, 24) % 200,
           "text_mask": jnp.ones((2, 24), jnp.int32)}
  with_adapters = models.build_model(MODEL).apply({"params": state.params}, batch)["logits"]
  plain = models.build_model({**MODEL, "lora_rank": 0, "adalora": False})
  merged = plain.apply({"params": peft.merge_lora(state.params, 16.0)}, batch)["logits"]
  np.testing.assert_allclose(np.asarray(merged), np.asarray(with_adapters), atol=1e-4)
