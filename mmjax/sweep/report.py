"""What a sweep leaves in its workdir: trials.csv and trials.md (one row per trial),
best_overrides.txt (the best trial as --config overrides), optimization_history.png and
param_importances.png."""
from __future__ import annotations

import csv
import io
import os
import warnings
from typing import Any

from absl import logging


def rows(study) -> tuple[list[str], list[dict[str, Any]]]:
  """(columns, rows): number, state, each parameter, value, duration_s, workdir, note."""
  trials = study.get_trials(deepcopy=False)
  keys = sorted({k for t in trials for k in t.params})
  resumed_as = {t.user_attrs["retry_of"]: t.number for t in trials
                if t.user_attrs.get("retry_of") is not None}
  out = []
  for t in trials:
    notes = []
    if t.number in resumed_as:
      notes.append(f"worker gone; resumed as trial {resumed_as[t.number]}")
    if t.user_attrs.get("retry_of") is not None:
      notes.append(f"resumes trial {t.user_attrs['retry_of']} from step "
                   f"{t.user_attrs.get('start_step', 0)}")
    if t.user_attrs.get("pruned_at") is not None:
      notes.append(f"pruned at step {t.user_attrs['pruned_at']}")
    if t.user_attrs.get("surplus"):
      notes.append("surplus (num_trials reached), not run")
    if t.user_attrs.get("error"):
      notes.append(t.user_attrs["error"][:120])
    duration = t.duration.total_seconds() if t.duration is not None else None
    out.append({"number": t.number, "state": t.state.name,
                **{k: t.params.get(k, "") for k in keys},
                "value": "" if t.value is None else t.value,
                "duration_s": "" if duration is None else round(duration, 1),
                "workdir": t.user_attrs.get("workdir", ""), "note": "; ".join(notes)})
  return ["number", "state", *keys, "value", "duration_s", "workdir", "note"], out


def _atomic_write(path: str, text: str) -> None:
  # Several workers may write the reports at the end: each write is whole.
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def _cell(value: Any) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def best_overrides(study) -> str | None:
  """The best complete trial's parameters as one line of --config.KEY=VALUE, or None."""
  try:
    best = study.best_trial
  except ValueError:   # no complete trial
    return None
  return " ".join(f"--config.{k}={v!r}" if isinstance(v, float) else f"--config.{k}={v}"
                  for k, v in best.params.items())


def write(study, workdir: str, metric: str) -> dict[str, Any]:
  """Writes every output into `workdir`; returns {'best_value', 'best_overrides',
  'counts'} for the caller's summary."""
  columns, table = rows(study)
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, columns)
  writer.writeheader()
  writer.writerows(table)
  _atomic_write(os.path.join(workdir, "trials.csv"), buffer.getvalue())
  md = ["| " + " | ".join(c if c != "value" else metric for c in columns) + " |",
        "|" + "---|" * len(columns)]
  md += ["| " + " | ".join(_cell(r[c]) for c in columns) + " |" for r in table]
  _atomic_write(os.path.join(workdir, "trials.md"), "\n".join(md) + "\n")
  line = best_overrides(study)
  best_value = None
  if line is not None:
    best_value = study.best_value
    _atomic_write(os.path.join(workdir, "best_overrides.txt"), line + "\n")
    logging.info("Best trial %d: %s = %.4g\n  %s", study.best_trial.number, metric,
                 best_value, line)
  else:
    logging.info("No complete trial yet: no best_overrides.txt.")
  _plots(study, workdir, metric)
  states = [r["state"] for r in table]
  return {"best_value": best_value, "best_overrides": line,
          "counts": {s: states.count(s) for s in sorted(set(states))}}


def _plots(study, workdir: str, metric: str) -> None:
  """optimization_history.png always (when a trial completed); param_importances.png with
  >= 2 complete trials and >= 1 parameter."""
  import matplotlib   # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")   # files only: no display, no GUI event loop
  import optuna   # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from optuna.visualization import matplotlib as optuna_plots
  complete = study.get_trials(deepcopy=False,
                              states=(optuna.trial.TrialState.COMPLETE,))
  if not complete:
    logging.info("No complete trial: no plots.")
    return
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    _save(optuna_plots.plot_optimization_history(study, target_name=metric),
          os.path.join(workdir, "optimization_history.png"))
    n_params = len({k for t in complete for k in t.params})
    if len(complete) < 2 or n_params < 1:
      logging.info("param_importances.png skipped: it needs >= 2 complete trials and >= 1 "
                   "parameter (%d complete, %d parameters).", len(complete), n_params)
      return
    try:
      ax = optuna_plots.plot_param_importances(study, target_name=metric)
    except (RuntimeError, ValueError, ZeroDivisionError) as e:
      # e.g. every complete trial has the same parameters: no variance to attribute.
      logging.info("param_importances.png skipped: %s", e)
      return
    _save(ax, os.path.join(workdir, "param_importances.png"))


def _save(ax, path: str) -> None:
  import matplotlib.pyplot as plt   # pylint: disable=g-import-not-at-top
  figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
  figure.tight_layout()
  figure.savefig(f"{path}.tmp.png", dpi=100)
  os.replace(f"{path}.tmp.png", path)
  plt.close(figure)   # optuna draws through pyplot: free its global figure list

