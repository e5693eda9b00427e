"""digit_vqa: correct answers per question kind, seeded determinism, variety, bad options."""
import re

import numpy as np
import pytest
import tensorflow as tf

import mmjax.data as data
from mmjax.data import ops, ops_vqa
from mmjax.errors import ConfigError

VQA_ANSWERS = ops_vqa.VQA_ANSWERS


def vqa(spec, digits, seed=(3, 4)):
  """Runs `spec` on {'label': digits[i]} with seed fold_in(seed, i), as the pipeline does.

  Returns (questions [N] str, answers [N] int, digits [N] int).
  """
  fn = ops.build_preprocess_fn(spec)
  base = tf.constant(seed, tf.int64)
  ds = tf.data.Dataset.from_tensor_slices(tf.constant(digits, tf.int64)).enumerate().map(
      lambda i, d: fn({"label": d}, tf.random.experimental.stateless_fold_in(base, i)))
  out = next(iter(ds.batch(len(digits))))
  assert out["label"].dtype == tf.int64
  return ([q.decode() for q in out["question"].numpy()], out["label"].numpy(),
          out["digit"].numpy())


def reference_answer(question, digit):
  """The answer to `question` about `digit`, from the question text alone."""
  yes_no = lambda cond: "yes" if cond else "no"
  if question == "what digit is this?":
    return str(digit)
  if question == "is this digit even?":
    return yes_no(digit % 2 == 0)
  if question == "is the digit odd?":
    return yes_no(digit % 2 == 1)
  m = re.fullmatch(r"is the digit (greater|less) than (\d)\?", question)
  assert m, question
  n = int(m.group(2))
  return yes_no(digit > n if m.group(1) == "greater" else digit < n)


DIGITS = np.tile(np.arange(10), 60)  # 600 examples, every digit 60 times.


def test_vocabulary():
  assert VQA_ANSWERS == tuple("0123456789") + ("no", "yes")
  assert (ops_vqa.NO, ops_vqa.YES) == (10, 11)


@pytest.mark.parametrize("kind", ops_vqa.QUESTION_KINDS)
def test_answers_are_correct_for_each_kind(kind):
  questions, answers, digits = vqa(f"digit_vqa(kinds={kind!r})", DIGITS)
  np.testing.assert_array_equal(digits, DIGITS)           # the digit is kept
  for q, a, d in zip(questions, answers, DIGITS):
    assert VQA_ANSWERS[a] == reference_answer(q, int(d)), (q, d, a)
  if kind == "digit":
    np.testing.assert_array_equal(answers, DIGITS)
  else:
    # yes and no are near balanced over uniform digits (each is 1/2 in expectation).
    assert set(answers) == {10, 11} and 0.4 < np.mean(answers == 11) < 0.6
  if kind in ("greater", "less"):
    ns = {int(q[-2]) for q in questions}
    assert ns == (set(range(9)) if kind == "greater" else set(range(1, 10)))


def test_all_kinds_mixed_and_answers_correct():
  questions, answers, _ = vqa("digit_vqa", DIGITS)
  for q, a, d in zip(questions, answers, DIGITS):
    assert VQA_ANSWERS[a] == reference_answer(q, int(d)), (q, d, a)
  kinds = {q if "than" not in q else q[:-3] for q in questions}
  assert len(kinds) == 5                                   # every kind is drawn
  assert set(answers) == set(range(12))                    # every answer class occurs


def test_same_image_gets_different_answers():
  """The answer depends on the question: one digit, many seeds -> several answers."""
  questions, answers, _ = vqa("digit_vqa", [4] * 50)
  assert {4, 10, 11} <= set(answers) and len(set(questions)) > 5


def test_same_seed_same_questions_other_seed_differs():
  a = vqa("digit_vqa", DIGITS, seed=(7, 8))
  b = vqa("digit_vqa", DIGITS, seed=(7, 8))
  c = vqa("digit_vqa", DIGITS, seed=(7, 9))
  assert a[0] == b[0]
  np.testing.assert_array_equal(a[1], b[1])
  assert np.mean([x != y for x, y in zip(a[0], c[0])]) > 0.5


def test_other_keys_and_in_a_chain():
  fn = ops.build_preprocess_fn("digit_vqa(kinds=('even', 'odd'), key='y', out='q', "
                               "digit_key='d')|tokenize('q', 'text', max_len=32)")
  out = fn({"y": tf.constant(3, tf.int32), "image": tf.zeros([2, 2, 1])},
           tf.constant([1, 2], tf.int64))
  assert out["y"].dtype == tf.int32 and int(out["d"]) == 3 and "image" in out
  assert int(out["y"]) == (11 if out["q"].numpy() == b"is the digit odd?" else 10)
  assert out["text"].shape == [32] and int(tf.reduce_sum(out["text_mask"])) < 32


@pytest.mark.parametrize("spec, pattern", [
    ("digit_vqa(kinds=('digit', 'colour'))", r"unknown question kind.*'colour'.*digit.*even"),
    ("digit_vqa(kinds='parity')", r"unknown question kind.*'parity'.*greater"),
    ("digit_vqa(kinds=())", "one or more distinct"),
    ("digit_vqa(kinds=('odd', 'odd'))", "one or more distinct"),
    ("digit_vqa(out='')", "out must be a key name"),
    ("digit_vqa(kind='digit')", "'digit_vqa'.*kind"),
])
def test_bad_options_are_config_errors(spec, pattern):
  with pytest.raises(ConfigError, match=pattern):
    ops.build_preprocess_fn(spec)


def test_non_digit_label_fails():
  fn = ops.build_preprocess_fn("digit_vqa")
  with pytest.raises(tf.errors.InvalidArgumentError, match="digit 0..9"):
    fn({"label": tf.constant(12, tf.int64)}, tf.constant([1, 2], tf.int64))


def test_eval_questions_are_the_same_every_pass(digits_dir):
  """Through the real pipeline: eval questions are fixed, answers match the digits."""
  cfg = dict(name="mmjax_digits", data_dir=digits_dir,
             preprocess_eval="digit_vqa|keep('question', 'label', 'digit')")
  passes = [list(data.make_eval_iterator(cfg, batch_size=500)) for _ in range(2)]
  for a, b in zip(*passes):
    np.testing.assert_array_equal(a["question"], b["question"])
    np.testing.assert_array_equal(a["label"], b["label"])
  for batch in passes[0]:
    for q, a, d, m in zip(batch["question"], batch["label"], batch["digit"], batch["mask"]):
      if m:
        assert VQA_ANSWERS[a] == reference_answer(q.decode(), int(d))
