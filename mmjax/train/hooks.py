"""What the loop does besides stepping, as hooks: logging, checkpointing, evaluating and
any registered plug-in (the catastrophic-overfitting guard, ...).

The loop calls every hook, in `order`, at the start of the run, after each train step
and when the run ends. Hooks share one `Run` (the state, the step, the metric
accumulator, the writer); a hook may replace the state or stop the run, and the hooks
after it then see `run.final`. A new hook is one class registered in `HOOKS` whose
`from_experiment` returns an instance when the config enables it (docs/interfaces.md).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
from absl import logging

from mmjax.errors import NonFiniteLossError
from mmjax.evals import evaluators as evaluators_lib
from mmjax.registry import Registry
from mmjax.train import step as step_lib, writers

HOOKS = Registry("train hook")


@dataclasses.dataclass
class Run:
  """The loop's state as hooks see it. `step` counts finished train steps; `final` is
  true after the last step of this run (the end, or a hook's stop)."""
  exp: Any
  state: Any
  acc: Any                       # the train step's metric accumulator (on device)
  new_acc: Callable[[], Any]     # a fresh accumulator
  writer: writers.MetricWriter
  start: int
  end: int
  step: int = 0
  stop: bool = False
  last_train: dict = dataclasses.field(default_factory=dict)
  last_eval: dict = dataclasses.field(default_factory=dict)
  # Fields every later eval row carries (e.g. guard/stopped after an early stop); a
  # callable value is called at each eval (e.g. the privacy spent so far).
  eval_extras: dict = dataclasses.field(default_factory=dict)
  # JSON-able entries saved with each checkpoint beside the state (e.g. the privacy
  # ledger); a resumed run finds them in exp.checkpointer.restored_data.
  checkpoint_extras: dict = dataclasses.field(default_factory=dict)
  evaluate_at_start: bool = False   # e.g. a run resumed after an early stop
  preempted: bool = False   # stopped by a preemption notice: checkpoint, no evals

  @property
  def final(self) -> bool:
    return self.stop or self.step == self.end

  def host_metrics(self) -> dict:
    """The accumulator on the host; raises NonFiniteLossError after a NaN/Inf loss."""
    host = jax.device_get(self.acc)
    _raise_if_nonfinite(host, self.exp.checkpointer)
    return host


class Hook:
  """Base class. `order` sorts hooks (lower runs first); `every` > 0 makes `due` true
  every that many steps, and always after the final step."""
  order: int = 100
  every: int = 0

  @classmethod
  def from_experiment(cls, exp) -> "Hook | None":
    """The hook for this experiment, or None when its config leaves it off."""
    return cls()

  def due(self, run: Run) -> bool:
    return run.final or bool(self.every and run.step % self.every == 0)

  def at_start(self, run: Run) -> None:
    """Before the first step (after restore)."""

  def after_step(self, run: Run) -> None:
    """After each train step; `run.step` steps are done."""

  def at_end(self, run: Run) -> None:
    """After the last step of a run that ended without an error."""

  def close(self) -> None:
    """When the run ends, also on an error."""


def register_hook(name: str):
  """Class decorator: registers a Hook subclass under `name`."""
  return HOOKS.register(name)


def build_hooks(exp) -> list[Hook]:
  """Every registered hook the experiment's config enables, in `order`."""
  hooks = [h for name in HOOKS.names()
           if (h := HOOKS.get(name).from_experiment(exp)) is not None]
  return sorted(hooks, key=lambda h: h.order)


@register_hook("first_step_time")
class FirstStepTimeHook(Hook):
  """Says when the train step starts compiling and how long the first step (its
  compilation included) took: the long silence at the start of a run, explained."""
  order = 1

  def __init__(self):
    self.started = None

  def at_start(self, run: Run) -> None:
    if run.end > run.start:
      logging.info("Compiling the train step (the first step includes it)...")
      self.started = time.perf_counter()

  def after_step(self, run: Run) -> None:
    if self.started is not None:
      jax.block_until_ready(run.acc)
      logging.info("First train step done in %.1f s (compilation included).",
                   time.perf_counter() - self.started)
      self.started = None


@register_hook("summary")
class SummaryHook(Hook):
  """At the end, the final eval metrics as a table, one per line (per-check details
  such as sanity/* and after/* are in metrics.jsonl and the evaluators' files)."""
  order = 90
  detail = ("/sanity/", "/after/", "num_examples")

  def at_end(self, run: Run) -> None:
    rows = {k: v for k, v in run.last_eval.items()
            if not any(d in f"/{k}" for d in self.detail)}
    if not rows:
      return
    width = max(map(len, rows))
    lines = [f"  {k:<{width}}  {v:.4g}" for k, v in sorted(rows.items())]
    logging.info("Final eval at step %d (%d metrics; all in metrics.jsonl):\n%s",
                 run.step, len(rows), "\n".join(lines))


@register_hook("log")
class LogHook(Hook):
  """Train metrics (means since the last log, lr, steps/s) every train.log_every steps."""
  order = 20

  def __init__(self, exp):
    self.every = exp.config.train.log_every
    self.schedule, self.updates_per_step = exp.schedule, exp.updates_per_step
    self.progress = None

  @classmethod
  def from_experiment(cls, exp):
    return cls(exp)

  def at_start(self, run: Run) -> None:
    self.progress = writers.Progress(run.end, run.start)

  def after_step(self, run: Run) -> None:
    if not self.due(run):
      return
    host = run.host_metrics()
    count = max(int(host["count"]), 1)
    train = {k: float(v) / count for k, v in host["sums"].items()}
    train["lr"] = float(self.schedule((run.step - 1) * self.updates_per_step))
    train["steps_per_sec"] = self.progress.log(run.step, train)
    run.writer.write(run.step, "train", train)
    run.last_train = train
    run.acc = run.new_acc()


@register_hook("checkpoint")
class CheckpointHook(Hook):
  """An asynchronous checkpoint (state and data position) every train.checkpoint_every
  steps (0: none on the way) and after the final one, unless
  train.final_checkpoint=False."""
  order = 30

  def __init__(self, checkpointer, every: int, final: bool):
    self.checkpointer, self.every, self.final = checkpointer, every, final

  @classmethod
  def from_experiment(cls, exp):
    t = exp.config.train
    if not (t.checkpoint_every or t.final_checkpoint):
      return None
    return cls(exp.checkpointer, t.checkpoint_every, t.final_checkpoint)

  def due(self, run: Run) -> bool:
    on_the_way = bool(self.every and run.step % self.every == 0)
    return on_the_way or run.preempted or (run.final and self.final)

  def after_step(self, run: Run) -> None:
    if self.due(run):
      run.host_metrics()   # never save a state after a NaN/Inf loss
      self.checkpointer.save(run.step, run.state, batches_consumed=run.step,
                             extra=run.checkpoint_extras)


@register_hook("evaluate")
class EvalHook(Hook):
  """The evaluators of config.evals, each on its own cadence (`every`, default
  train.eval_every) and all after the final step; one 'eval' row per step that ran any."""
  order = 40

  def __init__(self, scheduled: list):
    self.scheduled = scheduled

  @classmethod
  def from_experiment(cls, exp):
    # Evaluators first: they check their settings and read their examples before the
    # input pipeline and its threads start.
    return cls(evaluators_lib.build(exp))

  def due(self, run: Run) -> bool:
    return not run.preempted and any(e.due(run.step, run.final) for e in self.scheduled)

  def at_start(self, run: Run) -> None:
    if run.evaluate_at_start:
      self._evaluate(run, run.start, final=True)

  def after_step(self, run: Run) -> None:
    if self.due(run):
      self._evaluate(run, run.step, final=run.final)

  def _evaluate(self, run: Run, step: int, final: bool) -> None:
    metrics = evaluators_lib.evaluate(self.scheduled, run.state, step, final,
                                      progress=True, writer=run.writer)
    metrics.update({k: v() if callable(v) else v for k, v in run.eval_extras.items()})
    run.writer.write(step, "eval", metrics)
    shown = [k for k in metrics if not any(d in f"/{k}" for d in SummaryHook.detail)]
    more = len(metrics) - len(shown[:12])
    logging.info("eval at step %d: %s%s", step,
                 ", ".join(f"{k} {metrics[k]:.4g}" for k in shown[:12]),
                 f" (+{more} more in metrics.jsonl)" if more > 0 else "")
    run.last_eval = metrics


def _raise_if_nonfinite(host_acc: dict, checkpointer) -> None:
  bad = int(host_acc["first_nonfinite_step"])
  if bad < 0:
    return
  what = step_lib.NONFINITE.get(int(host_acc.get("first_nonfinite_what", 1)),
                                "the training loss")
  checkpointer.wait()
  last = checkpointer.latest_step()
  kept = (f"the last good checkpoint (step {last}) is kept in {checkpointer.directory} and "
          "a rerun resumes from it" if last is not None else "no checkpoint was written yet")
  raise NonFiniteLossError(
      f"{what[0].upper()}{what[1:]} became NaN or Inf at step {bad + 1}; stopped without "
      f"saving that state; {kept}. Lower optim.learning_rate, set optim.clip_norm, or "
      "check the inputs.")
