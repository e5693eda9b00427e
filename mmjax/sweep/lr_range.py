"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates", section 3.3):
one short run whose learning rate grows exponentially from min_lr to max_lr, with the
train loss of every step.

  python -m mmjax.sweep.lr_range --config=configs/digits_cnn.py --workdir=/tmp/lr \
      [--min_lr=1e-6] [--max_lr=1] [--steps=100] [--config.x=y ...]

It is an ordinary run of the trainer with overrides (optim.schedule='exponential' from
min_lr, end_lr_factor = max_lr / min_lr, a log row every step, no evals and no
checkpoints), so the model, objective, optimizer and data are the config's. Writes
WORKDIR/lr_range.csv (step, lr, loss, smoothed loss) and WORKDIR/lr_range.png, and
prints the suggested learning rate: the steepest descent of the smoothed loss against
log(lr), before its minimum. The minimum's lr / 10 (the other common rule) is printed
beside it.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Any

import ml_collections
import numpy as np
from absl import flags, logging

from mmjax import cli, figures
from mmjax.errors import ConfigError, MmjaxError, NonFiniteLossError

SMOOTHING = 0.9   # EMA of the loss; bias-corrected (fastai's lr_find does the same)


def range_config(config: ml_collections.ConfigDict, min_lr: float, max_lr: float,
                 steps: int) -> ml_collections.ConfigDict:
  """A locked copy of `config` that runs the range test."""
  if not 0 < min_lr < max_lr:
    raise ConfigError(f"--min_lr={min_lr} and --max_lr={max_lr} need 0 < min_lr < max_lr "
                      "(e.g. --min_lr=1e-6 --max_lr=1).")
  if steps < 10:
    raise ConfigError(f"--steps={steps} is too few for a loss curve; use >= 10 (100 is "
                      "typical).")
  out = config.copy_and_resolve_references()
  with out.unlocked():
    out.optim.update(dict(learning_rate=float(min_lr), schedule="exponential",
                          end_lr_factor=float(max_lr / min_lr), warmup_steps=0))
    out.train.update(dict(total_steps=int(steps), log_every=1, eval_every=0,
                          checkpoint_every=0, final_checkpoint=False))
    out.evals = ml_collections.ConfigDict()
  out.lock()
  return out


def smooth(losses: np.ndarray, beta: float = SMOOTHING) -> np.ndarray:
  """Bias-corrected exponential moving average of `losses` ([n] -> [n])."""
  out, avg = np.empty_like(losses, dtype=np.float64), 0.0
  for i, loss in enumerate(losses):
    avg = beta * avg + (1 - beta) * loss
    out[i] = avg / (1 - beta ** (i + 1))
  return out


def suggest(lrs: np.ndarray, losses: np.ndarray) -> dict[str, float]:
  """{'steepest': lr where the smoothed loss falls fastest per log(lr), before its
  minimum; 'min_loss': lr at the minimum; 'min_loss_over_10'} from [n] lrs and losses."""
  finite = np.isfinite(losses)
  lrs, losses = lrs[finite], losses[finite]
  smoothed = smooth(losses)
  lowest = int(np.argmin(smoothed))
  # Up to the minimum: after it the loss blows up and the slope means nothing.
  if lowest >= 2:
    slope = np.gradient(smoothed[:lowest + 1], np.log(lrs[:lowest + 1]))
    steepest = float(lrs[int(np.argmin(slope))])
  else:
    steepest = float(lrs[lowest])
  return {"steepest": steepest, "min_loss": float(lrs[lowest]),
          "min_loss_over_10": float(lrs[lowest]) / 10}


def _rows(workdir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  steps, lrs, losses = [], [], []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      if row.get("split") == "train" and "loss" in row and "lr" in row:
        steps.append(row["step"])
        lrs.append(row["lr"])
        losses.append(row["loss"])
  return np.array(steps), np.array(lrs, np.float64), np.array(losses, np.float64)


def _plot(path: str, lrs, losses, smoothed, picks: dict[str, float]) -> None:
  fig = figures.new_figure(6, 4)
  ax = fig.subplots()
  ax.plot(lrs, losses, color="0.7", lw=1, label="loss")
  ax.plot(lrs, smoothed, color="C0", lw=2, label=f"smoothed (EMA {SMOOTHING})")
  ax.axvline(picks["steepest"], color="C2", ls="--",
             label=f"steepest descent {picks['steepest']:.2g} (suggested)")
  ax.axvline(picks["min_loss_over_10"], color="C1", ls=":",
             label=f"min loss / 10 {picks['min_loss_over_10']:.2g}")
  ax.set_xscale("log")
  top = np.nanpercentile(losses, 95) if np.isfinite(losses).any() else 1
  ax.set_ylim(min(np.nanmin(smoothed), np.nanmin(losses)) * 0.95, top * 1.1)
  ax.set_xlabel("learning rate")
  ax.set_ylabel("train loss")
  ax.set_title("LR range test (Smith 2017)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def lr_range(config: ml_collections.ConfigDict, workdir: str, min_lr: float = 1e-6,
             max_lr: float = 1.0, steps: int = 100) -> dict[str, Any]:
  """Runs the test in `workdir` and writes lr_range.csv and lr_range.png there.

  Returns {'suggested': lr (steepest descent), 'min_loss', 'min_loss_over_10',
  'steps_run', 'csv', 'png'}. A loss that became NaN/Inf ends the run early; the steps
  before it are used.
  """
  from mmjax.train import loop   # pylint: disable=g-import-not-at-top
  run_config = range_config(config, min_lr, max_lr, steps)
  try:
    loop.train_and_evaluate(run_config, workdir)
  except NonFiniteLossError as e:
    logging.info("The loss diverged (%s): using the steps before.", e)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  step, lrs, losses = _rows(workdir)
  if len(step) < 3:
    raise ConfigError(f"The range test logged only {len(step)} steps before the loss "
                      "diverged; lower --max_lr.")
  picks = suggest(lrs, losses)
  smoothed = np.full_like(losses, np.nan)
  smoothed[np.isfinite(losses)] = smooth(losses[np.isfinite(losses)])
  csv_path = os.path.join(workdir, "lr_range.csv")
  with open(csv_path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["step", "lr", "loss", "smoothed_loss"])
    writer.writerows(zip(step.tolist(), lrs.tolist(), losses.tolist(), smoothed.tolist()))
  png_path = os.path.join(workdir, "lr_range.png")
  _plot(png_path, lrs, losses, smoothed, picks)
  return {"suggested": picks["steepest"], **picks, "steps_run": int(len(step)),
          "csv": csv_path, "png": png_path}


def _cli() -> None:
  """The command line. Flags are defined here, not at import, so that importing this
  module (tests, notebooks) next to mmjax.main defines no second --config."""
  config = cli.define_config_flag()
  workdir = flags.DEFINE_string("workdir", None, "Where the short run and its files go.")
  min_lr = flags.DEFINE_float("min_lr", 1e-6, "The first step's learning rate.")
  max_lr = flags.DEFINE_float("max_lr", 1.0, "The learning rate the last step reaches.")
  steps = flags.DEFINE_integer("steps", 100, "Train steps of the test.")
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv) -> None:
    if len(argv) > 1:
      cli.fail(f"Unexpected arguments {argv[1:]}; pass options as --flag=value.")
    config.value.lock()
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(cli.OnlyMmjaxInfo())
    try:
      out = lr_range(config.value, workdir.value, min_lr.value, max_lr.value, steps.value)
    except MmjaxError as e:
      cli.fail(str(e))
    print(f"suggested learning rate {out['suggested']:.3g} (steepest descent of the "
          f"smoothed loss); min loss at {out['min_loss']:.3g}, / 10 = "
          f"{out['min_loss_over_10']:.3g}. Files: {out['csv']}, {out['png']}")

  cli.run(main)


if __name__ == "__main__":
  _cli()
