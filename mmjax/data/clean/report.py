"""The cleaning report: report.json (everything), report.md (counts and the first flagged
examples of each check) and flagged.png (a grid, one row per check)."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

from mmjax.data.clean.detect import Finding
from mmjax.data.clean.duplicates import spectrogram_image
from mmjax.data.clean.load import Loaded, text_of

CHECKS = ("filter", "exact_duplicate", "near_duplicate", "contamination", "label_issue")
_PER_ROW = 8


def summarize(findings: Sequence[Finding]) -> dict[str, dict[str, int]]:
  """{check: {'flagged': n, 'removed': n}}."""
  return {c: {"flagged": sum(f.check == c for f in findings),
              "removed": sum(f.check == c and f.remove for f in findings)} for c in CHECKS}


def write_json(path: str, report: dict[str, Any], findings: Sequence[Finding]) -> None:
  with open(path, "w") as f:
    json.dump({**report, "findings": [dataclasses.asdict(x) for x in findings]}, f,
              indent=1, default=str)


def write_markdown(path: str, report: dict[str, Any], findings: Sequence[Finding],
                   listed: int = 20) -> None:
  lines = [f"# Cleaning report: {report['dataset']} -> {report['cleaned']}", "",
           f"Checked on `{report['dedup_on']}`; sizes before -> after: " + ", ".join(
               f"{s} {report['sizes_before'][s]} -> {report['sizes_after'][s]}"
               for s in report["sizes_before"]) + ".", "",
           "| check | flagged | removed |", "|---|---:|---:|"]
  lines += [f"| {c} | {v['flagged']} | {v['removed']} |" for c, v in report["counts"].items()]
  for split, ids in report["contaminated_eval"].items():
    lines += ["", f"**Contamination**: {len(ids)} of {report['sizes_before'][split]} "
              f"`{split}` examples have a (near) copy in `{report['train_split']}`"
              + (f": ids {ids[:listed]}" if ids else "")
              + (f" and {len(ids) - listed} more." if len(ids) > listed else ".")]
  for check in CHECKS:
    rows = [f for f in findings if f.check == check]
    if not rows:
      continue
    lines += ["", f"## {check} ({len(rows)})", "", "| split | id | source | reason |",
              "|---|---:|---|---|"]
    lines += [f"| {f.split} | {f.id} | {f.source} | {f.reason} |" for f in rows[:listed]]
    if len(rows) > listed:
      lines.append(f"| ... | | | {len(rows) - listed} more in report.json |")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def _cell(loaded: Loaded, example: dict[str, Any]) -> np.ndarray | None:
  if loaded.image and example[loaded.image] is not None:
    return example[loaded.image]
  if loaded.audio:
    return spectrogram_image(example[loaded.audio])[::-1]
  return None


def _short(finding: Finding) -> str:
  """A title that fits over a thumbnail."""
  if finding.check == "label_issue":
    return f"label {finding.extra['given']} -> {finding.extra['suggested']}?"
  if finding.check == "contamination":
    return f"copy of {finding.extra['eval_split']} id {finding.partner}"
  if finding.partner is not None:
    return f"copy of id {finding.partner}"
  return finding.reason[:24]


def write_grid(path: str, loaded: Loaded, findings: Sequence[Finding]) -> bool:
  """A PNG with up to 8 flagged examples per check; False (nothing written) if none."""
  from mmjax.figures import new_figure   # pylint: disable=g-import-not-at-top
  rows = [(c, [f for f in findings if f.check == c][:_PER_ROW]) for c in CHECKS]
  rows = [(c, fs) for c, fs in rows if fs]
  if not rows:
    return False
  fig = new_figure(1.6 * _PER_ROW, 1.9 * len(rows))
  for r, (check, fs) in enumerate(rows):
    for k, f in enumerate(fs):
      ax = fig.add_subplot(len(rows), _PER_ROW, r * _PER_ROW + k + 1)
      example = loaded.splits[f.split].examples[f.position]
      cell = _cell(loaded, example)
      if cell is None:
        ax.text(0.5, 0.5, text_of(example, loaded.text)[:60], ha="center", va="center",
                wrap=True, fontsize=6)
      else:
        ax.imshow(cell[..., 0] if cell.ndim == 3 and cell.shape[-1] == 1 else cell,
                  cmap="gray", aspect="auto" if loaded.audio and not loaded.image else None)
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(f"{f.split} {f.id}\n{_short(f)}", fontsize=6)
      if k == 0:
        ax.set_ylabel(check, fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  return True
