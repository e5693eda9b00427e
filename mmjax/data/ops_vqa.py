"""Visual question answering on digits: one templated question per example.

`digit_vqa` turns a digit-classification example into a VQA one: it draws a question
about the digit, writes it to example['question'] and replaces example['label'] by the
answer's index in `VQA_ANSWERS`. The same image gets different answers for different
questions, so a model must read both the image and the question.
"""
from __future__ import annotations

from mmjax.data.host_registry import OPS
from mmjax.data.lazy_tf import tf
from mmjax.errors import ConfigError

# Answer classes: the digits keep their own index, then "no" = 10 and "yes" = 11.
VQA_ANSWERS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "no", "yes")
NO, YES = VQA_ANSWERS.index("no"), VQA_ANSWERS.index("yes")

# kind -> question template; {n} is a random digit, drawn so that yes and no are equally
# likely over uniform digits ('greater': n in 0..8, 'less': n in 1..9).
QUESTIONS = {
    "digit": "what digit is this?",
    "even": "is this digit even?",
    "odd": "is the digit odd?",
    "greater": "is the digit greater than {n}?",
    "less": "is the digit less than {n}?",
}
QUESTION_KINDS = tuple(QUESTIONS)


def _check_kinds(kinds) -> tuple[str, ...]:
  """kinds (one name or a sequence of names) -> a non-empty tuple of distinct kinds."""
  kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
  unknown = [k for k in kinds if k not in QUESTIONS]
  if unknown:
    raise ConfigError(f"Preprocessing op 'digit_vqa': unknown question kind(s) {unknown}; "
                      f"choose from {QUESTION_KINDS}, e.g. digit_vqa(kinds=('digit', "
                      f"'even')).")
  if not kinds or len(set(kinds)) != len(kinds):
    raise ConfigError(f"Preprocessing op 'digit_vqa': kinds must be one or more distinct "
                      f"names from {QUESTION_KINDS}, got {kinds!r}.")
  return kinds


def _yes_no(cond: tf.Tensor) -> tf.Tensor:
  return tf.where(cond, YES, NO)


@OPS.register("digit_vqa", random=True)
def digit_vqa(kinds=QUESTION_KINDS, key: str = "label", out: str = "question",
              digit_key: str = "digit"):
  """example[key] digit int [] -> example[out] question string [], example[key] answer
  int [] (an index into VQA_ANSWERS, same dtype), example[digit_key] the digit.

  The question kind is uniform over `kinds` (a subset of QUESTION_KINDS: 'digit' -> the
  digit 0..9; 'even', 'odd', 'greater' than n, 'less' than n -> yes/no). Drawn from the
  op's seed only, so the eval questions are the same in every run.
  """
  kinds = _check_kinds(kinds)
  for name, value in dict(key=key, out=out, digit_key=digit_key).items():
    if not isinstance(value, str) or not value:
      raise ConfigError(f"Preprocessing op 'digit_vqa': {name} must be a key name "
                        f"(a non-empty string), got {value!r}.")

  def op(example, seed):
    label = tf.convert_to_tensor(example[key])
    digit = tf.cast(label, tf.int32)
    check = tf.debugging.Assert(
        (digit >= 0) & (digit <= 9),
        [f"Preprocessing op 'digit_vqa' needs example[{key!r}] to be a digit 0..9, got", digit])
    with tf.control_dependencies([check]):
      digit = tf.identity(digit)
    s_kind, s_n = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    kind = tf.random.stateless_uniform([], seed=s_kind, maxval=len(kinds), dtype=tf.int32)
    n = tf.random.stateless_uniform([], seed=s_n, maxval=9, dtype=tf.int32)  # 0..8
    # Every kind's (question, answer), then the drawn one: a gather, no graph branches.
    cases = {
        "digit": (QUESTIONS["digit"], digit),
        "even": (QUESTIONS["even"], _yes_no(digit % 2 == 0)),
        "odd": (QUESTIONS["odd"], _yes_no(digit % 2 == 1)),
        "greater": (tf.strings.format(QUESTIONS["greater"].replace("{n}", "{}"), n),
                    _yes_no(digit > n)),
        "less": (tf.strings.format(QUESTIONS["less"].replace("{n}", "{}"), n + 1),
                 _yes_no(digit < n + 1)),
    }
    questions = tf.stack([tf.convert_to_tensor(cases[k][0]) for k in kinds])
    answers = tf.stack([cases[k][1] for k in kinds])
    return {**example, out: tf.gather(questions, kind), digit_key: label,
            key: tf.cast(tf.gather(answers, kind), label.dtype)}
  return op
