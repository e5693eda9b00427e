"""Several runs side by side: their curves on shared axes and their final metrics.

    python -m mmjax.compare DIR1 DIR2 ... [--metrics=eval/accuracy,train/loss] [--out=DIR]

writes one PNG per metric to OUT (default ./compare), legend = each run's directory
name, and prints the final value of each metric per run as one markdown table, also
written to OUT/compare.md. Metrics are named '<split>/<metric>' as in TensorBoard
('train/loss', 'eval/robust/accuracy'); the default is every plotted family's metrics
(mmjax/train/curves.py) that any run has. Runs are read from DIR/metrics.jsonl only.
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys
from typing import Sequence

from mmjax.errors import ConfigError, MmjaxError
from mmjax.train import curves


def load_runs(dirs: Sequence[str]) -> dict[str, curves.Series]:
  """{label: series} of each run directory (label = its basename, made unique); a
  ConfigError naming any directory without a metrics.jsonl."""
  runs: dict[str, curves.Series] = {}
  for d in dirs:
    if not os.path.isfile(os.path.join(d, "metrics.jsonl")):
      why = "does not exist" if not os.path.exists(d) else "has no metrics.jsonl"
      raise ConfigError(f"{d} is not an mmjax run: it {why}. Pass workdirs of "
                        "`python -m mmjax.main --workdir=...` runs.")
    label = os.path.basename(os.path.normpath(d)) or d
    while label in runs:   # two runs named alike in different folders
      label = f"{label}'"
    runs[label] = curves.series(curves.read_rows(d))
  return runs


def choose_metrics(runs: dict[str, curves.Series], wanted: Sequence[str] | None
                   ) -> list[str]:
  """The metrics to compare: `wanted` (each checked against those present, with
  did-you-mean), else every metric of a plotted family, in family order."""
  present = sorted({m for s in runs.values() for m in s})
  if wanted:
    for m in wanted:
      if m not in present:
        close = difflib.get_close_matches(m, present, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"No run has the metric {m!r}.{hint} The runs have: "
                          f"{', '.join(present)}.")
    return list(wanted)
  order = list(curves.FAMILIES)
  chosen = [m for m in present if curves.family_of(m) is not None]
  return sorted(chosen, key=lambda m: (m.split("/")[0] != "eval",
                                       order.index(curves.family_of(m)), m))


def table(runs: dict[str, curves.Series], metrics: Sequence[str]) -> str:
  """Markdown: one row per run, its final step and the final value of each metric
  ('-' where a run lacks it)."""
  head = "| run | final step | " + " | ".join(metrics) + " |"
  rule = "|---|---:|" + "---:|" * len(metrics)
  rows = [head, rule]
  for label, s in runs.items():
    final = curves.final_values(s)
    step = max((int(steps[-1]) for steps, _ in s.values()), default=0)
    cells = [f"{final[m]:.4g}" if m in final else "-" for m in metrics]
    rows.append(f"| {label} | {step} | " + " | ".join(cells) + " |")
  return "\n".join(rows) + "\n"


def compare(dirs: Sequence[str], metrics: Sequence[str] | None = None,
            out: str = "compare") -> tuple[list[str], str]:
  """Draws OUT/<metric>.png for each metric and writes OUT/compare.md;
  -> (PNG paths, the markdown table)."""
  runs = load_runs(dirs)
  chosen = choose_metrics(runs, metrics)
  paths = []
  for m in chosen:
    lines = {label: s[m] for label, s in runs.items() if m in s}
    log_y = curves.FAMILIES.get(curves.family_of(m) or "", (None, False))[1]
    paths.append(curves.draw(os.path.join(out, f"{curves.file_name(m)}.png"), m, lines,
                             log_y))
  md = table(runs, chosen)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "compare.md"), "w") as f:
    f.write(md)
  return paths, md


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m mmjax.compare",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("dirs", nargs="+", help="run workdirs (each with metrics.jsonl)")
  parser.add_argument("--metrics", default="",
                      help="comma-separated '<split>/<metric>' names (default: all "
                           "loss, accuracy, lr, privacy and grad_norm curves)")
  parser.add_argument("--out", default="compare", help="folder for the PNGs and table")
  args = parser.parse_args(argv)
  wanted = [m.strip() for m in args.metrics.split(",") if m.strip()] or None
  try:
    paths, md = compare(args.dirs, wanted, args.out)
  except MmjaxError as e:
    print(f"mmjax.compare: error: {e}", file=sys.stderr)
    return 2
  print(md, end="")
  print(f"\n{len(paths)} plots and compare.md in {args.out}/", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
