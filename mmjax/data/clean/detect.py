"""Runs every detector over a loaded dataset and returns its findings, one per flagged
example: filters, exact and near duplicates within each split, train/eval contamination,
and (on the train split, after the other removals) likely label errors."""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from mmjax.data.clean import duplicates, filters, label_noise
from mmjax.data.clean.load import Loaded


@dataclasses.dataclass
class Finding:
  """One flagged example. `check` is the detector ('filter', 'exact_duplicate',
  'near_duplicate', 'contamination', 'label_issue'); `partner` the id of the example it
  duplicates (kept, or in the eval split) if any; `remove` whether the cleaned dataset
  leaves it out."""
  split: str
  position: int
  id: int
  source: str
  check: str
  reason: str
  remove: bool
  partner: int | None = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def _source(example: dict[str, Any]) -> str:
  value = example.get("source", b"")
  return value.decode() if isinstance(value, bytes) else str(value)


def _duplicates_within(split: str, data, key: str, kind: str, sig, skip: set[int]
                       ) -> list[Finding]:
  """Exact then near duplicate groups of one split; each keeps its lowest id."""
  out, flagged = [], set(skip)
  hashes = [duplicates.content_hash(e, key, kind) for e in data.examples]
  exact_pairs = []
  by_hash: dict[str, list[int]] = {}
  for i, h in enumerate(hashes):
    if h and i not in skip:
      by_hash.setdefault(h, []).append(i)
  for members in by_hash.values():
    exact_pairs += [(members[0], m) for m in members[1:]]
  near_pairs = [(i, j) for i, j in sig.pairs() if i not in skip and j not in skip]
  for check, pairs in (("exact_duplicate", exact_pairs), ("near_duplicate", near_pairs)):
    for group in duplicates.groups(len(data.examples), pairs):
      group = sorted(group, key=lambda p: data.ids[p])
      keep = group[0]
      for p in group[1:]:
        if p in flagged:
          continue
        flagged.add(p)
        out.append(Finding(split, p, int(data.ids[p]), _source(data.examples[p]), check,
                           f"{check.replace('_', ' ')} of id {int(data.ids[keep])}", True,
                           int(data.ids[keep])))
  return out


def find_problems(loaded: Loaded, *, dedup_on: str, train_split: str,
                  dup_options: duplicates.Options, filter_options: filters.Options,
                  contamination: str, label_issues: str, seed: int
                  ) -> tuple[list[Finding], dict[str, Any]]:
  """(findings, {'seconds': per detector, 'contaminated_eval': {split: [eval ids]}})."""
  key = getattr(loaded, dedup_on)
  findings: list[Finding] = []
  seconds: dict[str, float] = {}
  t = time.perf_counter()
  for split, data in loaded.splits.items():
    problems: dict[int, str] = {}
    if loaded.image:
      problems.update(filters.image_problems(data.examples, loaded.image))
    if loaded.text:
      problems.update(filters.text_problems(data.examples, loaded.text, filter_options))
    if loaded.audio:
      problems.update(filters.audio_problems(data.examples, loaded.audio, filter_options))
    findings += [Finding(split, p, int(data.ids[p]), _source(data.examples[p]), "filter",
                         why, True) for p, why in sorted(problems.items())]
  seconds["filters"] = time.perf_counter() - t
  t = time.perf_counter()
  sigs = {s: duplicates.Signatures(d.examples, key, dedup_on, dup_options)
          for s, d in loaded.splits.items()}
  for split, data in loaded.splits.items():
    skip = {f.position for f in findings if f.split == split}
    findings += _duplicates_within(split, data, key, dedup_on, sigs[split], skip)
  seconds["duplicates"] = time.perf_counter() - t
  t = time.perf_counter()
  contaminated: dict[str, list[int]] = {}
  train = loaded.splits.get(train_split)
  if train is not None:
    train_hash: dict[str, list[int]] = {}
    for p, e in enumerate(train.examples):
      h = duplicates.content_hash(e, key, dedup_on)
      if h:
        train_hash.setdefault(h, []).append(p)
    flagged_train = {f.position: f for f in findings if f.split == train_split}
    for split, data in loaded.splits.items():
      if split == train_split:
        continue
      pairs = {(q, p) for q, e in enumerate(data.examples)
               for p in train_hash.get(duplicates.content_hash(e, key, dedup_on), [])}
      pairs |= set(sigs[split].pairs(sigs[train_split]))
      contaminated[split] = sorted({int(data.ids[q]) for q, _ in pairs})
      for q, p in sorted(pairs, key=lambda qp: (qp[1], qp[0])):
        if p in flagged_train and flagged_train[p].check == "contamination":
          continue
        f = Finding(train_split, p, int(train.ids[p]), _source(train.examples[p]),
                    "contamination", f"copy of {split} id {int(data.ids[q])}",
                    contamination == "drop_train", int(data.ids[q]), {"eval_split": split})
        if p in flagged_train:   # already a duplicate or filtered: list it here too
          f.remove = f.remove or flagged_train[p].remove
          findings.remove(flagged_train[p])
        flagged_train[p] = f
        findings.append(f)
  seconds["contamination"] = time.perf_counter() - t
  t = time.perf_counter()
  if train is not None and loaded.label and label_issues != "off":
    removed = {f.position for f in findings if f.split == train_split and f.remove}
    rows = np.array([p for p in range(len(train.examples)) if p not in removed
                     and train.examples[p][key] is not None])
    labels = np.array([int(train.examples[p][loaded.label]) for p in rows])
    if len(rows) >= 20 and len(np.unique(labels)) >= 2:
      x = label_noise.features([train.examples[p] for p in rows], key, dedup_on)
      issues, probs = label_noise.find_issues(x, labels, len(loaded.class_names), seed=seed)
      names = loaded.class_names
      for rank, r in enumerate(issues):
        p = int(rows[r])
        guess = int(np.argmax(probs[r]))
        findings.append(Finding(
            train_split, p, int(train.ids[p]), _source(train.examples[p]), "label_issue",
            f"labelled {names[labels[r]]!r}, looks like {names[guess]!r} "
            f"(p={probs[r, guess]:.2f} vs {probs[r, labels[r]]:.2f})",
            label_issues == "drop", None,
            {"given": names[labels[r]], "suggested": names[guess], "rank": rank,
             "given_probability": float(probs[r, labels[r]])}))
  seconds["label_issues"] = time.perf_counter() - t
  return findings, {"seconds": seconds, "contaminated_eval": contaminated}
