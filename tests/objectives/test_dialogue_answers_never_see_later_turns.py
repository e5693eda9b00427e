"""The `dialogue` objective trains every turn in one pass, yet an answer token sees only
the image, its own question, the earlier turns and its own earlier tokens: the turn
mask says so, and changing a later turn changes no earlier logit; with history=False the
earlier turns are hidden too. Bad
configs are refused before compute."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models, objectives
from mmjax.data import dialogue
from mmjax.errors import ConfigError
from mmjax.objectives import dialogue as dialogue_obj

QUESTIONS = ["what is the top-left digit?", "and the one right of it?",
             "which of them is larger?"]
ANSWERS = ["four", "seven", "the right one"]
MAX_LEN = 32
TINY = dict(name="multimodal", modalities=("image",), fusion="towers", width=16, depth=1,
            num_heads=2, mlp_dim=32, image_size=28, patch_size=14, max_len=MAX_LEN,
            caption_depth=1)


@pytest.fixture(scope="module")
def setup():
  model = models.build_model(TINY)
  image = np.random.default_rng(0).random((1, 28, 28, 1), np.float32)
  variables = models.init_variables(model, {"image": image}, jax.random.PRNGKey(0))
  row = dialogue.encode_dialogue(QUESTIONS, ANSWERS, MAX_LEN)
  batch = {"image": image, **{f"dialogue{'' if k == 'tokens' else '_' + k}": v[None]
                              for k, v in row.items() if k != "mask"}}

  @jax.jit
  def logits(tokens, history):
    x = model.apply(variables, {"image": image}, method="embed")
    apply = lambda *a, **k: model.apply(variables, *a, **k)
    return dialogue_obj.dialogue_logits(apply, x, tokens, batch["dialogue_turn"],
                                        history=history, train=False)
  return model, variables, batch, row, logits


def test_the_turn_mask_lets_each_token_read_only_earlier_tokens_of_earlier_turns():
  turn = jnp.array([[0, 0, 1, 1, 1, 2, -1]])
  with_history = np.asarray(dialogue_obj.turn_attention_mask(turn, True))[0]
  without = np.asarray(dialogue_obj.turn_attention_mask(turn, False))[0]
  t = np.asarray(turn)[0]
  for q in range(7):
    for k in range(7):
      real = t[k] >= 0
      assert with_history[q, k] == (k <= q and real)
      assert without[q, k] == (k <= q and real and t[k] == t[q])
  assert not with_history[:, 6].any()   # padding is never read


def test_changing_a_later_turn_changes_nothing_before_it(setup):
  _, _, batch, row, logits = setup
  tokens = jnp.asarray(batch["dialogue"])
  turn = row["turn"]
  last = np.flatnonzero(turn == 2)
  edited = tokens.at[0, last[:10]].set(tokens[0, last[:10]] + 7)   # turn 2's question
  for history in (True, False):
    before, after = logits(tokens, history)[0], logits(edited, history)[0]
    earlier = (turn >= 0) & (turn < 2)
    np.testing.assert_array_equal(before[earlier], after[earlier])
    assert np.abs(before[~earlier & (turn >= 0)] - after[~earlier & (turn >= 0)]).max() > 1e-4
  # The history matters with history=True and not without it: edit turn 0.
  first = np.flatnonzero(turn == 0)[:5]
  edited = tokens.at[0, first].set(tokens[0, first] + 3)
  later = turn == 2
  assert np.abs(logits(tokens, True)[0][later] - logits(edited, True)[0][later]).max() > 1e-4
  np.testing.assert_array_equal(logits(tokens, False)[0][later],
                                logits(edited, False)[0][later])


def test_dialogue_refusals_before_compute(setup):
  model, variables, batch, _, _ = setup
  no_decoder = models.build_model({**TINY, "caption_depth": 0})
  with pytest.raises(ConfigError, match="generates answers with the caption decoder"):
    objectives.make_objective({"name": "dialogue"}, no_decoder)
  short = models.build_model({**TINY, "max_len": 24})
  objective = objectives.make_objective({"name": "dialogue"}, short)
  with pytest.raises(ConfigError, match="32 tokens long, 8 more than config.model.max_len=24"):
    jax.eval_shape(lambda b: objective(variables["params"], b, jax.random.PRNGKey(0),
                                       model_state={}, train=True), batch)


def test_history_dropout_hides_the_history_of_some_training_dialogues_only(setup):
  model, variables, batch, row, _ = setup
  turn = np.stack([row["turn"], row["turn"]])
  mixed = np.asarray(dialogue_obj.turn_attention_mask(turn, jnp.array([True, False])))
  np.testing.assert_array_equal(mixed[0], dialogue_obj.turn_attention_mask(turn[:1], True)[0])
  np.testing.assert_array_equal(mixed[1], dialogue_obj.turn_attention_mask(turn[:1], False)[0])

  n = 16   # the same dialogue 16 times: the train loss mixes the two losses by the share kept
  many = {k: np.repeat(v, n, 0) for k, v in batch.items()}
  def loss(**options):
    objective = objectives.make_objective({"name": "dialogue", **options}, model)
    return objective(variables["params"], many, jax.random.PRNGKey(1), model_state={},
                     train=True)[0]
  with_history, without = loss(), loss(history=False)
  dropped = loss(history_dropout=0.5)
  kept = (dropped - without) / (with_history - without) * n
  assert 2 <= round(float(kept)) <= n - 2 and abs(kept - round(float(kept))) < 1e-3
  objective = objectives.make_objective({"name": "dialogue", "history_dropout": 0.5}, model)
  at_eval = objective(variables["params"], many, jax.random.PRNGKey(1), model_state={},
                      train=False)[0]
  np.testing.assert_allclose(at_eval, with_history, rtol=1e-6)   # never at eval

  with pytest.raises(ConfigError, match=r"history_dropout=1.0 must be in \[0, 1\)"):
    objectives.make_objective({"name": "dialogue", "history_dropout": 1.0}, model)
  with pytest.raises(ConfigError, match="objective.history=False hides it from all"):
    objectives.make_objective({"name": "dialogue", "history": False,
                               "history_dropout": 0.5}, model)
