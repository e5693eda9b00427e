"""Visual dialogue op: a scene's K questions and answers -> one token row (teacher forcing
of every turn in one pass; layout in `mmjax/data/dialogue.py`)."""
from __future__ import annotations

from mmjax.data import dialogue
from mmjax.data.host_registry import OPS
from mmjax.data.lazy_tf import tf
from mmjax.errors import ConfigError


def max_dialogue_length(turns: int) -> int:
  """The most tokens `turns` turns of `mmjax_visdial_digits` can take (its longest
  question + answer pair per turn)."""
  from mmjax.data.embedded import visdial_digits  # pylint: disable=g-import-not-at-top
  longest = max(dialogue.turn_length(q, a) for pairs in visdial_digits.possible_turns()
                .values() for q, a in pairs)
  return turns * longest


def check_turns(turns, max_len) -> None:
  """ConfigError unless 1 <= turns <= the builder's NUM_TURNS and `turns` turns fit in
  max_len tokens (saying by how many they would not)."""
  from mmjax.data.embedded import visdial_digits  # pylint: disable=g-import-not-at-top
  k = visdial_digits.NUM_TURNS
  if isinstance(turns, bool) or not isinstance(turns, int) or not 1 <= turns <= k:
    raise ConfigError(f"Preprocessing op 'dialogue_tokens': turns={turns!r} must be an int "
                      f"in [1, {k}] (the dialogues of mmjax_visdial_digits have {k} turns; "
                      "a dialogue of 0 turns has nothing to answer).")
  need = max_dialogue_length(turns)
  if not isinstance(max_len, int) or max_len < need:
    raise ConfigError(f"Preprocessing op 'dialogue_tokens': {turns} turns take up to "
                      f"{need} tokens, {need - max_len if isinstance(max_len, int) else '?'}"
                      f" more than max_len={max_len!r}; set max_len >= {need} (and "
                      f"config.model.max_len with it) or ask fewer turns.")


@OPS.register("dialogue_tokens")
def dialogue_tokens(turns: int = 5, max_len: int = 56, question_key: str = "question",
                    answer_key: str = "answer", out: str = "dialogue"):
  """example[question_key], example[answer_key] string [K] -> example[out] int32
  [max_len] token row of the first `turns` turns, example[out+'_mask'], [out+'_turn']
  (turn index, -1 = PAD) and [out+'_target'] (1 = an answer token or its EOS); the
  strings and the per-turn labels are cut to `turns` too."""
  check_turns(turns, max_len)

  def encode(questions, answers):
    rows = dialogue.encode_dialogue([q.decode("utf-8") for q in questions],
                                    [a.decode("utf-8") for a in answers], max_len)
    return rows["tokens"], rows["mask"], rows["turn"], rows["target"]

  def op(example, seed):
    del seed
    questions, answers = example[question_key][:turns], example[answer_key][:turns]
    rows = tf.numpy_function(encode, [questions, answers], [tf.int32] * 4, stateful=False)
    names = ("", "_mask", "_turn", "_target")
    cut = {k: example[k][:turns] for k in ("turn_type", "needs_history") if k in example}
    return {**example, **cut, question_key: questions, answer_key: answers,
            **{out + n: tf.ensure_shape(r, [max_len]) for n, r in zip(names, rows)}}
  return op
