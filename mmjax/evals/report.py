"""Classification and entity-level evaluation reports, confusion matrices and perplexity.

`classification_report` gives per-class precision/recall/F1/support plus accuracy and the
micro, macro and support-weighted averages, in the layout of sklearn's
`classification_report(..., labels=range(K), output_dict=True, zero_division=0)`.
`entity_report` does the same for BIO-tagged sequences at the entity (chunk) level, equal
to seqeval's default, conlleval-compatible mode (chunking re-implemented here, so neither
sklearn nor seqeval is a dependency; the tests compare against both). `format_report`
renders either as sklearn's text table; `write_report` stores a report as JSON + text
(+ a confusion-matrix PNG) in a workdir.

Only numpy is imported at module import time; matplotlib is imported inside the PNG writer.
"""
from __future__ import annotations

import collections.abc
import json
import math
import os
from typing import Sequence

import numpy as np

from mmjax import figures
from mmjax.errors import ConfigError

AVERAGES = ("micro avg", "macro avg", "weighted avg")
_METRICS = ("precision", "recall", "f1-score", "support")


def _labels(y, name: str) -> np.ndarray:
  """y as a 1-D int64 array; ConfigError for anything else."""
  y = np.asarray(y)
  if y.ndim != 1:
    raise ConfigError(f"{name} must be a 1-D array of class ids [N], got shape {y.shape}; "
                      f"flatten it (and drop ignored positions) first.")
  if y.size and not np.issubdtype(y.dtype, np.integer):
    if not (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))):
      raise ConfigError(f"{name} must hold integer class ids, got dtype {y.dtype}; "
                        f"pass argmax predictions, not scores.")
  return y.astype(np.int64)


def _checked_pair(y_true, y_pred, num_classes) -> tuple[np.ndarray, np.ndarray, int]:
  """Validated (y_true [N], y_pred [N], K); K inferred as max label + 1 when None."""
  y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
  if y_true.shape != y_pred.shape:
    raise ConfigError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}; "
                      f"pass one prediction per example.")
  if y_true.size == 0:
    raise ConfigError("y_true and y_pred are empty; evaluate at least one example.")
  lo = min(y_true.min(), y_pred.min())
  if lo < 0:
    raise ConfigError(f"Class ids must be >= 0, got {lo}; drop ignored positions (e.g. -1 "
                      f"padding) before computing the report.")
  hi = int(max(y_true.max(), y_pred.max()))
  if num_classes is None:
    num_classes = hi + 1
  elif not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}.")
  elif hi >= num_classes:
    raise ConfigError(f"Found class id {hi} but num_classes is {num_classes}; raise "
                      f"num_classes or check the labels.")
  return y_true, y_pred, int(num_classes)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den elementwise, 0.0 where den == 0 (sklearn's zero_division=0, no warning)."""
  num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
  return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def _row(p, r, f, s) -> dict:
  return {"precision": float(p), "recall": float(r), "f1-score": float(f), "support": int(s)}


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
  """Counts of (true, predicted) class pairs.

  Args:
    y_true, y_pred: int arrays [N] with ids in [0, num_classes).
    num_classes: K.
  Returns:
    int64 [K, K]: entry [i, j] = number of examples of true class i predicted as j (sklearn's
    `confusion_matrix(y_true, y_pred, labels=range(K))`).
  """
  y_true, y_pred, k = _checked_pair(y_true, y_pred, num_classes)
  return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k).astype(np.int64)


def classification_report(y_true, y_pred, *, num_classes: int | None = None,
                          class_names: Sequence[str] | None = None) -> dict:
  """Per-class and averaged precision, recall, F1 and support for single-label predictions.

  Args:
    y_true, y_pred: int arrays [N] of class ids in [0, K).
    num_classes: K; default len(class_names), else max label + 1.
    class_names: K names used as the per-class keys; default '0', '1', ... (sklearn's).
  Returns:
    {name: {'precision', 'recall', 'f1-score', 'support'} for each of the K classes (also
     those never seen), 'accuracy': float, 'micro avg': {...}, 'macro avg': {...},
     'weighted avg': {...}}. Undefined ratios (no predictions / no support) are 0.0, as
    sklearn's zero_division=0. Every class is in [0, K), so micro P = R = F1 = accuracy.
  """
  if class_names is not None:
    class_names = [str(c) for c in class_names]
    if num_classes is None:
      num_classes = len(class_names)
    elif len(class_names) != num_classes:
      raise ConfigError(f"class_names has {len(class_names)} names but num_classes is "
                        f"{num_classes}; pass one name per class.")
    if len(set(class_names)) != len(class_names):
      raise ConfigError(f"class_names must be unique (they become report keys), got "
                        f"{class_names}.")
  y_true, y_pred, k = _checked_pair(y_true, y_pred, num_classes)
  names = class_names or [str(i) for i in range(k)]
  cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
  tp, pred, true = np.diag(cm), cm.sum(0), cm.sum(1)
  precision, recall = _divide(tp, pred), _divide(tp, true)
  # sklearn's form 2tp / (2tp + fp + fn) (= 2PR / (P + R)), 0 when there is nothing.
  f1 = _divide(2 * tp, pred + true)
  report = {n: _row(*v) for n, *v in zip(names, precision, recall, f1, true)}
  n = int(true.sum())
  acc = float(tp.sum() / n)
  report["accuracy"] = acc
  report["micro avg"] = _row(acc, acc, acc, n)
  report["macro avg"] = _row(precision.mean(), recall.mean(), f1.mean(), n)
  w = true / n
  report["weighted avg"] = _row(w @ precision, w @ recall, w @ f1, n)
  return report


# --- entity level (seqeval default mode) -------------------------------------------------

def _split_tag(tag: str) -> tuple[str, str]:
  """(prefix letter, entity type) the way seqeval's default mode reads a tag.

  The prefix is the FIRST CHARACTER whatever it is, the type what follows the first '-'
  ('_' when empty): 'B-PER' -> ('B', 'PER'), 'O' -> ('O', '_'), 'B' -> ('B', '_').
  """
  return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
  """seqeval's end_of_chunk: did a chunk end between the previous token and this one?"""
  if prev_tag in ("E", "S"):
    return True
  if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
    return True
  # A type change closes any open chunk (B-PER I-LOC is two chunks), but not after O/'.'.
  return prev_tag not in ("O", ".") and prev_type != type_


def _starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
  """seqeval's start_of_chunk: does a chunk start at this token?"""
  if tag in ("B", "S"):
    return True
  # conlleval: an I-/E- right after O, E- or S- opens a chunk (no B- needed).
  if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
    return True
  return tag not in ("O", ".") and prev_type != type_


def _sentences(tags, name: str) -> list[list[str]]:
  """tags as a list of sentences (a flat list of strings is one sentence, as in seqeval)."""
  if isinstance(tags, str) or not isinstance(tags, (collections.abc.Sequence, np.ndarray)):
    raise ConfigError(f"{name} must be a list of tag lists, e.g. [['B-PER', 'I-PER', 'O']], "
                      f"got {type(tags).__name__}.")
  tags = list(tags)
  if tags and all(isinstance(t, str) for t in tags):
    tags = [tags]
  out = []
  for sent in tags:
    if isinstance(sent, str):
      raise ConfigError(f"{name} mixes tag strings and tag lists; pass a list of lists.")
    sent = list(sent)
    bad = [t for t in sent if not isinstance(t, str) or not t]
    if bad:
      raise ConfigError(f"{name} holds {bad[0]!r}, not a tag string; convert ids with "
                        f"tags_from_ids first.")
    out.append(sent)
  return out


def _entities(sentences: list[list[str]]) -> list[tuple[str, int, int]]:
  """[(type, start, end)] (end inclusive) exactly as seqeval.metrics.get_entities.

  Like seqeval, sentences are joined with an 'O' after each and chunked as one stream
  with global offsets; the state machine (including its quirks, e.g. a chunk's start
  offset is not reset by an end) is a line-for-line port, so edge cases agree too.
  """
  stream = [t for sent in sentences for t in sent + ["O"]] + ["O"]
  prev_tag, prev_type, begin = "O", "", 0
  chunks = []
  for i, chunk in enumerate(stream):
    tag, type_ = _split_tag(chunk)
    if _ends(prev_tag, tag, prev_type, type_):
      chunks.append((prev_type, begin, i - 1))
    if _starts(prev_tag, tag, prev_type, type_):
      begin = i
    prev_tag, prev_type = tag, type_
  return chunks


def _entity_counts(true_tags, pred_tags):
  """(type names [T], tp [T], n_pred [T], n_true [T]) with types sorted."""
  true_s, pred_s = _sentences(true_tags, "true_tags"), _sentences(pred_tags, "pred_tags")
  if len(true_s) != len(pred_s):
    raise ConfigError(f"true_tags has {len(true_s)} sequences but pred_tags has "
                      f"{len(pred_s)}; pass one prediction per sequence.")
  for i, (t, p) in enumerate(zip(true_s, pred_s)):
    if len(t) != len(p):
      raise ConfigError(f"Sequence {i} has {len(t)} true tags but {len(p)} predicted; "
                        f"predict exactly one tag per token.")
  by_type = {}
  for which, sents in ((0, true_s), (1, pred_s)):
    for type_, start, end in _entities(sents):
      by_type.setdefault(type_, (set(), set()))[which].add((start, end))
  names = sorted(by_type)
  tp = np.array([len(by_type[n][0] & by_type[n][1]) for n in names], np.int64)
  n_pred = np.array([len(by_type[n][1]) for n in names], np.int64)
  n_true = np.array([len(by_type[n][0]) for n in names], np.int64)
  return names, tp, n_pred, n_true


def _prf(tp, n_pred, n_true):
  p, r = _divide(tp, n_pred), _divide(tp, n_true)
  # seqeval's form 2PR / (P + R), 0 when P + R = 0.
  return p, r, _divide(2 * p * r, p + r)


def entity_report(true_tags, pred_tags) -> dict:
  """Entity-level precision, recall, F1 and support per entity type, and their averages.

  Equal to `seqeval.metrics.classification_report(true_tags, pred_tags, output_dict=True)`
  (default mode: conlleval-compatible chunking of BIO / IOB1 / IOBES tags, where e.g. an I-
  after O or after another type starts a new entity). An entity counts as correct iff its
  type, start and end all match.

  Args:
    true_tags, pred_tags: B sequences of tag strings ('B-PER', 'I-PER', 'O', ...), the
      b-th of each the same length.
  Returns:
    {type: {'precision', 'recall', 'f1-score', 'support'} for each type in either input
     (sorted), 'micro avg', 'macro avg', 'weighted avg'}; support counts true entities.
    Undefined ratios are 0.0 (seqeval: 0.0 with a warning; its macro avg with no entity
    at all is NaN, here 0.0).
  """
  names, tp, n_pred, n_true = _entity_counts(true_tags, pred_tags)
  p, r, f = _prf(tp, n_pred, n_true)
  report = {n: _row(*v) for n, *v in zip(names, p, r, f, n_true)}
  support = int(n_true.sum())
  report["micro avg"] = _row(*(v[0] for v in _prf(tp.sum(keepdims=True),
                                                 n_pred.sum(keepdims=True),
                                                 n_true.sum(keepdims=True))), support)
  if names:
    report["macro avg"] = _row(p.mean(), r.mean(), f.mean(), support)
  else:
    report["macro avg"] = _row(0.0, 0.0, 0.0, 0)
  w = n_true / support if support else np.zeros(len(names))
  report["weighted avg"] = _row(w @ p, w @ r, w @ f, support)
  return report


def entity_f1(true_tags, pred_tags) -> float:
  """Micro-averaged entity F1 (= seqeval.metrics.f1_score); inputs as `entity_report`."""
  return entity_report(true_tags, pred_tags)["micro avg"]["f1-score"]


def tags_from_ids(ids, mask_or_labels, tag_names: Sequence[str]) -> list[list[str]]:
  """Token-label ids to tag strings, dropping ignored positions (input for entity_report).

  Args:
    ids: int array [B, T] of tag ids (labels or argmax predictions).
    mask_or_labels: bool array [B, T] (True = real token), or the int label array [B, T]
      whose negative entries (-1, or -100 as in HF) mark ignored positions (padding,
      non-first sub-word pieces). Pass the labels for both true and predicted ids, so that
      both keep the same positions.
    tag_names: names of the tag ids, e.g. ['O', 'B-PER', 'I-PER'].
  Returns:
    B lists of tag strings, the b-th as long as row b's kept positions.
  """
  ids, keep = np.asarray(ids), np.asarray(mask_or_labels)
  if ids.ndim != 2 or keep.shape != ids.shape:
    raise ConfigError(f"ids and mask_or_labels must both be [B, T] arrays of one shape, got "
                      f"{ids.shape} and {keep.shape}.")
  if keep.dtype != np.bool_:
    if not np.issubdtype(keep.dtype, np.integer):
      raise ConfigError(f"mask_or_labels must be a bool mask or int labels, got dtype "
                        f"{keep.dtype}.")
    keep = keep >= 0
  names = list(tag_names)
  kept = ids[keep]
  if kept.size and (kept.min() < 0 or kept.max() >= len(names)):
    raise ConfigError(f"ids at kept positions must lie in [0, {len(names)}) (one per "
                      f"tag name), got range [{kept.min()}, {kept.max()}]; check "
                      f"tag_names or the mask.")
  return [[names[i] for i in row[m]] for row, m in zip(ids, keep)]


# --- text, files ---------------------------------------------------------------------------

def format_report(report: dict, digits: int = 4) -> str:
  """The report as sklearn's (and seqeval's) text table.

  A header line, a row per class / entity type, a blank line, then the 'accuracy' row (if
  present: f1-score column only) and the average rows. For an `entity_report` the text is
  identical to seqeval's; for a `classification_report` it is sklearn's plus the
  'micro avg' row (sklearn prints only 'accuracy' when the two coincide).
  """
  if not isinstance(report, dict):
    raise ConfigError(f"format_report takes the dict of classification_report or "
                      f"entity_report, got {type(report).__name__}.")
  classes = [k for k in report if k not in AVERAGES and k != "accuracy"]
  for k in classes + [a for a in AVERAGES if a in report]:
    if not isinstance(report[k], dict) or any(m not in report[k] for m in _METRICS):
      raise ConfigError(f"Report entry {k!r} needs the keys {_METRICS}; pass the dict "
                        f"returned by classification_report or entity_report.")
  width = max([len(str(c)) for c in classes] + [len("weighted avg"), digits])
  row = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
  lines = "{:>{width}s} ".format("", width=width)
  lines += "".join(f" {h:>9}" for h in _METRICS) + "\n\n"
  for c in classes:
    v = report[c]
    lines += row.format(str(c), v["precision"], v["recall"], v["f1-score"],
                        int(v["support"]), width=width, digits=digits)
  lines += "\n"
  if "accuracy" in report:
    support = (report["micro avg"]["support"] if "micro avg" in report
               else sum(report[c]["support"] for c in classes))
    acc_row = "{:>{width}s} " + " {:>9}" * 2 + " {:>9.{digits}f} {:>9}\n"
    lines += acc_row.format("accuracy", "", "", report["accuracy"], int(support),
                            width=width, digits=digits)
  for a in AVERAGES:
    if a in report:
      v = report[a]
      lines += row.format(a, v["precision"], v["recall"], v["f1-score"], int(v["support"]),
                          width=width, digits=digits)
  return lines


def perplexity(total_nll: float, total_tokens: float) -> float:
  """exp(total_nll / total_tokens): per-token perplexity from summed NLL (nats) and count.

  Returns inf when the mean NLL overflows exp (> ~709 nats/token).
  """
  if not total_tokens > 0:   # also catches NaN
    raise ConfigError(f"perplexity needs total_tokens > 0, got {total_tokens!r}; evaluate "
                      f"on at least one unmasked token.")
  try:
    return math.exp(float(total_nll) / float(total_tokens))
  except OverflowError:
    return math.inf


def save_confusion_png(matrix, class_names: Sequence[str] | None, path: str,
                       title: str = "") -> str:
  """Writes the confusion matrix [K, K] (rows true, columns predicted) as a PNG heatmap.

  The values are printed in the cells (ints as counts, floats, e.g. a row-normalized
  matrix, to 2 significant digits); figure and font sizes scale with K so ~30 classes stay
  readable. class_names: K tick labels (default '0'..'K-1'). Returns `path`.
  """
  m = np.asarray(matrix)
  if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
    raise ConfigError(f"matrix must be a square [K, K] confusion matrix, got shape "
                      f"{m.shape}.")
  k = m.shape[0]
  if class_names is None:
    class_names = range(k)
  names = [str(c) for c in class_names]
  if len(names) != k:
    raise ConfigError(f"class_names has {len(names)} names but the matrix has {k} classes; "
                      f"pass one name per row.")
  side = min(max(4.0, 0.45 * k + 2.5), 18.0)
  integral = np.issubdtype(m.dtype, np.integer)
  cells = [f"{int(v)}" if integral else f"{v:.2g}" for v in m.ravel()]
  # Size the counts to fit a cell (~80% of the side is axes): about 0.6 em per digit.
  cell_pt = 72.0 * 0.8 * side / k
  font = max(5.0, min(10.0, 0.9 * cell_pt / (0.6 * max(map(len, cells)) + 0.4)))
  tick_font = 10.0 if k <= 15 else 8.0
  fig = figures.new_figure(side + 1.0, side)
  ax = fig.add_subplot()
  im = ax.imshow(m, cmap="Blues", interpolation="nearest")
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  ax.set_xticks(range(k), names, rotation=90, fontsize=tick_font)
  ax.set_yticks(range(k), names, fontsize=tick_font)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  if title:
    ax.set_title(title)
  top = float(m.max())
  for (i, j), text in zip(np.ndindex(k, k), cells):
    # White text on the dark half of the colormap so counts stay legible.
    color = "white" if top > 0 and m[i, j] > top / 2 else "black"
    ax.text(j, i, text, ha="center", va="center", fontsize=font, color=color)
  fig.tight_layout()
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  fig.savefig(path, format="png", dpi=100)
  return path


def _plain(v):
  """v with numpy scalars/arrays turned into Python ones, so json can dump it."""
  if isinstance(v, dict):
    return {str(k): _plain(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_plain(x) for x in v]
  if isinstance(v, np.ndarray):
    return _plain(v.tolist())
  if isinstance(v, np.generic):
    return v.item()
  return v


def write_report(report: dict, workdir: str, name: str, *, confusion=None,
                 class_names: Sequence[str] | None = None) -> dict[str, str]:
  """Writes WORKDIR/{name}.json (the report), WORKDIR/{name}.txt (`format_report`) and,
  with `confusion` [K, K], WORKDIR/{name}_confusion.png.

  class_names: tick labels for the PNG (default: the report's per-class keys when there
  are K of them). Returns {'json': path, 'txt': path} plus 'png': path when written.
  """
  if not name or os.sep in name:
    raise ConfigError(f"name must be a plain file stem such as 'test', got {name!r}.")
  text = format_report(report)
  os.makedirs(workdir, exist_ok=True)
  paths = {"json": os.path.join(workdir, f"{name}.json"),
           "txt": os.path.join(workdir, f"{name}.txt")}
  with open(paths["json"], "w") as f:
    json.dump(_plain(report), f, indent=2)
  with open(paths["txt"], "w") as f:
    f.write(text)
  if confusion is not None:
    if class_names is None:
      keys = [k for k in report if k not in AVERAGES and k != "accuracy"]
      class_names = keys if len(keys) == np.shape(confusion)[0] else None
    paths["png"] = save_confusion_png(confusion, class_names,
                                      os.path.join(workdir, f"{name}_confusion.png"),
                                      title=name)
  return paths
