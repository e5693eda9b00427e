r"""mmjax's AutoAttack side by side with torchattacks' (PyPI, 3.5.x): same weights, same
examples, stage by stage.

  python benchmarks/autoattack_reference.py \
      --workdirs=standard=/tmp/mnist_std,pgd=/tmp/mnist_pgd,fgsm_co=/tmp/mnist_fgsm \
      --config=configs/papers/fast_at_mnist.py:digits \
      --num_examples=1000 --eps=0.3 --out=/tmp/autoattack_reference

For each workdir (NAME=PATH) it restores the newest checkpoint (the EMA parameters when
the config evaluates with them, as `--mode=eval` does), takes the first --num_examples
examples of the config's eval split, and runs

  mmjax      `autoattack(logits_fn, x, y, key, eps, norm='linf', version='standard')`:
             APGD-CE, APGD-T, FAB-T, Square, each on the points still robust;
  reference  torchattacks' APGD (loss 'ce'), APGDT, FAB (multi_targeted) and Square, the
             instances `torchattacks.AutoAttack(model, norm='Linf', eps, version='standard',
             n_classes, seed)` builds, run in the same order on the points still robust,
             on a PyTorch copy of the same network (mmjax/bench/torch_mirror.py).

It prints and writes `--out`/autoattack_reference.{json,md}: clean and per-stage robust
accuracy of both, the difference in points, how often the two agree per example, and
wall time per stage on this machine; per-example robustness in `--out`/NAME/robust.npz.

Settings of the reference. torchattacks 3.5.1's AutoAttack('standard') builds
  APGD(eps, norm, seed, loss='ce', n_restarts=1)                   steps=10 (its default)
  APGDT(eps, norm, seed, n_classes, n_restarts=1)                  steps=10, 9 targets
  FAB(eps, norm, seed, multi_targeted=True, n_classes, n_restarts=1) steps=10, 9 targets
  Square(eps, norm, seed, n_queries=5000, n_restarts=1)            p_init=0.8, margin loss
so its gradient attacks run 10 iterations, not the 100 of Croce & Hein's reference code
(fra31/auto-attack, `version='standard'`), which mmjax follows. --reference_steps (default
100) sets the APGD, APGD-T and FAB iterations of those same instances; every other setting
stays the class's (APGD rho 0.75, FAB alpha_max 0.1 / eta 1.05 / beta 0.9, ...).
--reference_steps=0 keeps the class's own 10. The stages run as the reference code's
run_standard_evaluation runs them: clean accuracy first, then each attack on the points
still robust, in batches of --batch_size. (torchattacks' MultiAttack, which the class
calls, attacks the same points: it hands APGD-CE the misclassified ones too, which APGD-CE
skips; its random starts are drawn per batch, so individual draws differ.) A returned
example outside the eps-ball or [0, 1] does not count as broken; how many were is
reported (FAB filters its own; APGD and Square project).

Timing: mmjax's stage times include compilation unless --mmjax_warm; PyTorch runs on
--torch_threads (1 by default, see its help), JAX on its default threads.

PyTorch runs in a child process (this script with --torch_job): importing it into a
process that has loaded TensorFlow (the input pipeline, for the examples) can abort it.
Needs `pip install torch` and `pip install --no-deps torchattacks==3.5.1` (its metadata
pins requests~=2.25.1, an old release TensorFlow does not need; the attacks import only
torch, numpy and scipy).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

# torchattacks class name -> AutoAttack stage name, in AutoAttack's order.
_REFERENCE_STAGES = {"APGD": "apgd-ce", "APGDT": "apgd-t", "FAB": "fab-t", "Square": "square"}
# Settings of each torchattacks instance worth reporting (attribute name -> report name).
_REFERENCE_SETTINGS = {
    "APGD": {"steps": "steps", "n_restarts": "n_restarts", "loss": "loss",
             "thr_decr": "rho", "eot_iter": "eot_iter", "seed": "seed"},
    "APGDT": {"steps": "steps", "n_restarts": "n_restarts", "n_target_classes": "targets",
              "thr_decr": "rho", "eot_iter": "eot_iter", "seed": "seed"},
    "FAB": {"steps": "steps", "n_restarts": "n_restarts", "multi_targeted": "multi_targeted",
            "n_target_classes": "targets", "alpha_max": "alpha_max", "eta": "eta",
            "beta": "beta", "seed": "seed"},
    "Square": {"n_queries": "n_queries", "n_restarts": "n_restarts", "p_init": "p_init",
               "loss": "loss", "rescale_schedule": "rescale_schedule", "seed": "seed"},
}
# How far a returned adversarial example may stray outside the eps-ball or [0, 1]
# (float32 rounding of x + delta) and still count.
_BALL_TOLERANCE = 1e-5


# ---------------------------------------------------------------------------------------
# The PyTorch side (child process).


def run_reference(model, images, labels, *, eps: float, num_classes: int, seed: int,
                  steps: int, batch_size: int, log=print) -> dict:
  """torchattacks' standard AutoAttack on a torch model, stage by stage.

  images: float32 NCHW numpy in [0, 1]; labels: int numpy [N]. Returns {'clean_accuracy',
  'stages': [{'attack', 'robust_accuracy', 'seconds', 'settings'}], 'robust_accuracy',
  'robust': bool numpy [N], 'outside_ball': points a stage returned outside the ball}.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import torchattacks  # pylint: disable=g-import-not-at-top
  model.eval()
  x_all = torch.from_numpy(np.ascontiguousarray(images, np.float32))
  y_all = torch.from_numpy(np.asarray(labels, np.int64))

  def predict(x):
    with torch.no_grad():
      return torch.cat([model(x[i:i + batch_size]).argmax(1)
                        for i in range(0, len(x), batch_size)])

  # The instances the library's own AutoAttack builds: every setting is the library's.
  ensemble = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard",
                                     n_classes=num_classes, seed=seed)
  attacks = list(ensemble._autoattack.attacks)  # pylint: disable=protected-access
  names = [type(a).__name__ for a in attacks]
  if names != list(_REFERENCE_STAGES):
    raise RuntimeError(f"torchattacks {torchattacks.__version__} AutoAttack('standard') "
                       f"builds {names}, not {list(_REFERENCE_STAGES)}: update this script.")
  for attack in attacks:
    if steps and hasattr(attack, "steps"):
      attack.steps = steps

  started = time.perf_counter()
  robust = (predict(x_all) == y_all).numpy()
  clean_seconds = time.perf_counter() - started
  result = {"clean_accuracy": float(robust.mean()), "clean_seconds": clean_seconds,
            "stages": [], "outside_ball": 0}
  log(f"  reference clean: {result['clean_accuracy']:.4f}")
  for attack in attacks:
    kind = type(attack).__name__
    stage = _REFERENCE_STAGES[kind]
    started = time.perf_counter()
    # The still-robust points, in batches, as the reference code's run_standard_evaluation.
    todo = np.flatnonzero(robust)
    for start in range(0, len(todo), batch_size):
      idx = todo[start:start + batch_size]
      x, y = x_all[idx], y_all[idx]
      adv = attack(x, y).detach()
      delta = (adv - x).abs().flatten(1).amax(1)
      inside = ((delta <= eps + _BALL_TOLERANCE) & (adv.flatten(1).amin(1) >= -_BALL_TOLERANCE)
                & (adv.flatten(1).amax(1) <= 1 + _BALL_TOLERANCE)).numpy()
      broken = (predict(adv) != y).numpy()
      # Outside the ball it is no valid adversarial example, whatever its prediction.
      result["outside_ball"] += int((broken & ~inside).sum())
      robust[idx[broken & inside]] = False
    seconds = time.perf_counter() - started
    settings = {report: getattr(attack, attr)
                for attr, report in _REFERENCE_SETTINGS[kind].items()}
    result["stages"].append({"attack": stage, "robust_accuracy": float(robust.mean()),
                             "seconds": seconds, "points_attacked": int(len(todo)),
                             "settings": settings, "class": f"torchattacks.{kind}"})
    log(f"  reference {stage}: {robust.mean():.4f} ({seconds:.1f} s, {len(todo)} points)")
  result["robust_accuracy"] = float(robust.mean())
  result["robust"] = robust
  return result


def torch_job(job_dir: str) -> None:
  """Child process: builds the mirror, loads the flax variables, checks its logits and runs
  the reference; writes job_dir/reference.json and reference_robust.npy."""
  import torch  # pylint: disable=g-import-not-at-top
  import torchattacks  # pylint: disable=g-import-not-at-top
  from mmjax.bench import torch_mirror  # pylint: disable=g-import-not-at-top
  with open(os.path.join(job_dir, "job.json")) as f:
    job = json.load(f)
  if job["torch_threads"]:
    torch.set_num_threads(job["torch_threads"])
  arrays = np.load(os.path.join(job_dir, "job.npz"))
  variables = {}
  for key in arrays.files:
    if key.startswith("var/"):
      node = variables
      *parents, leaf = key[len("var/"):].split("/")
      for part in parents:
        node = node.setdefault(part, {})
      node[leaf] = arrays[key]
  images = arrays["images"]                      # NHWC, as mmjax
  model = torch_mirror.load_flax_params(
      torch_mirror.mirror_for(job["model"], image_shape=images.shape[1:]), variables)
  images_nchw = images.transpose(0, 3, 1, 2)
  with torch.no_grad():
    torch_logits = torch.cat([model(torch.from_numpy(images_nchw[i:i + job["batch_size"]]))
                              for i in range(0, len(images), job["batch_size"])]).numpy()
  flax_logits = arrays["flax_logits"]
  check = {"max_abs_logit_difference": float(np.abs(torch_logits - flax_logits).max()),
           "max_abs_logit": float(np.abs(flax_logits).max()),
           "argmax_agreement": float(np.mean(torch_logits.argmax(1) ==
                                             flax_logits.argmax(1)))}
  print(f"  torch mirror vs flax logits: max |diff| {check['max_abs_logit_difference']:.2e} "
        f"(max |logit| {check['max_abs_logit']:.1f}), argmax agreement "
        f"{check['argmax_agreement']:.4f}", flush=True)
  # float32 rounding gives ~1e-6 relative; more means another network than mmjax's.
  if check["max_abs_logit_difference"] > 1e-3 * max(1.0, check["max_abs_logit"]):
    raise SystemExit("The torch mirror's logits differ from mmjax's: not the same network; "
                     "the comparison would be meaningless.")
  result = run_reference(model, images_nchw, arrays["labels"], eps=job["eps"],
                         num_classes=job["num_classes"], seed=job["seed"],
                         steps=job["reference_steps"], batch_size=job["batch_size"],
                         log=lambda s: print(s, flush=True))
  np.save(os.path.join(job_dir, "reference_robust.npy"), result.pop("robust"))
  result.update(logit_check=check, torch=torch.__version__,
                torchattacks=torchattacks.__version__, threads=torch.get_num_threads())
  with open(os.path.join(job_dir, "reference.json"), "w") as f:
    json.dump(result, f, indent=2)


# ---------------------------------------------------------------------------------------
# The mmjax side (parent process).


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _named(entries, names, what):
  """['a=x,b=y', 'z'] -> {name: value}; an entry without NAME= applies to every name."""
  out = {}
  for entry in entries or ():
    for item in entry.split(","):
      name, sep, value = item.partition("=")
      if sep and name in names:
        out[name] = value
      elif not sep:
        out.update({n: item for n in names})
      else:
        raise SystemExit(f"{what}: {name!r} names no workdir (workdirs: {sorted(names)}).")
  return out


def load_config(path_arg: str, overrides: list[str]):
  """A config file PATH[:ARG] (as --config= of mmjax.main) with KEY=VALUE overrides."""
  from mmjax import config as config_lib  # pylint: disable=g-import-not-at-top
  path, _, arg = path_arg.partition(":")
  config = config_lib.load_config_file(path, arg or None)
  for item in overrides:
    key, _, value = item.partition("=")
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = _parse_value(value)
  return config


def _check_against_workdir(config, workdir: str) -> None:
  """The model and dataset the workdir was trained with (its config.json) must be the
  rebuilt config's: otherwise the weights would go into another network, or be attacked
  on another dataset's examples. Other settings (steps, optimizer) may differ."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    trained = json.load(f)
  rebuilt = json.loads(config.to_json_best_effort())
  for key in ("model", "data.name"):
    section, _, field = key.partition(".")
    get = lambda c: c.get(section, {}).get(field) if field else c.get(section)
    if get(trained) != get(rebuilt):
      raise SystemExit(f"{workdir} was trained with config.{key}={get(trained)}, but "
                       f"--config gives {get(rebuilt)}; pass the config (and --override) "
                       "it was trained with.")


def prepare(name: str, workdir: str, config, num_examples: int, batch_size: int) -> dict:
  """Restores the newest checkpoint and takes the first eval examples."""
  import jax  # pylint: disable=g-import-not-at-top
  from mmjax.evals import batched  # pylint: disable=g-import-not-at-top
  from mmjax.train import loop  # pylint: disable=g-import-not-at-top
  _check_against_workdir(config, workdir)
  exp = loop.build_experiment(config, workdir, "eval")
  try:
    restored = exp.checkpointer.restore_latest(exp.abstract_state)
  finally:
    exp.checkpointer.close()
  if restored is None:
    raise SystemExit(f"{name}: no checkpoint in {workdir}/checkpoints.")
  state, _, step = restored
  # As `--mode=eval`: the EMA parameters when the config keeps them (use_ema's default).
  use_ema = state.ema_params is not None
  variables = jax.device_get(batched.model_variables(
      state.ema_params if use_ema else state.params, state.model_state))
  logits_fn = batched.ModelLogits(exp.model)
  examples = batched.eval_examples(config.data, num_examples, batch_size)
  labels = examples.pop("label").astype(np.int32)
  inputs = logits_fn.inputs(variables, examples, batch_size)
  images = np.asarray(inputs["image"], np.float32)
  # The torch mirror is fed these pixels: they must be exactly the model's inputs.
  if set(inputs) != {"image"} or not np.array_equal(images, examples["image"]):
    raise SystemExit(f"{name}: the model's embed() changes the images; the mirror "
                     "supports image classifiers whose inputs are the pixels.")
  if images.min() < 0 or images.max() > 1:
    raise SystemExit(f"{name}: eval pixels span [{images.min()}, {images.max()}], not [0, 1].")
  flax_logits = batched.in_chunks(lambda x: logits_fn.encode(variables, x)["logits"],
                                      inputs, batch_size)
  return dict(name=name, workdir=workdir, step=int(step), config=config,
              variables=variables, logits_fn=logits_fn, inputs=inputs, images=images,
              labels=labels, flax_logits=np.asarray(flax_logits, np.float32))


def run_mmjax(prepared: dict, *, eps: float, seed: int, batch_size: int) -> dict:
  """mmjax's standard AutoAttack on the prepared examples."""
  import jax  # pylint: disable=g-import-not-at-top
  from mmjax.evals.autoattack import autoattack  # pylint: disable=g-import-not-at-top
  started = time.perf_counter()
  result = autoattack(prepared["logits_fn"], prepared["inputs"], prepared["labels"],
                      jax.random.key(seed), eps=eps, norm="linf", version="standard",
                      batch_size=batch_size, params=prepared["variables"])
  result = dict(result, total_seconds=time.perf_counter() - started)
  result["robust"] = np.asarray(result["robust"], bool)
  return result


def run_reference_child(prepared: dict, job_dir: str, *, eps: float, seed: int,
                        batch_size: int, reference_steps: int, torch_threads: int) -> dict:
  """Writes the job (variables, examples, flax logits) and runs the torch side on it."""
  import jax  # pylint: disable=g-import-not-at-top
  from mmjax import models  # pylint: disable=g-import-not-at-top
  os.makedirs(job_dir, exist_ok=True)
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(prepared["variables"])[0]:
    flat["var/" + "/".join(str(getattr(p, "key", p)) for p in path)] = np.asarray(leaf)
  np.savez(os.path.join(job_dir, "job.npz"), images=prepared["images"],
           labels=prepared["labels"], flax_logits=prepared["flax_logits"], **flat)
  model = models.config_with_defaults(prepared["config"].model)
  job = dict(model=model, eps=eps, seed=seed, batch_size=batch_size,
             reference_steps=reference_steps, num_classes=int(model["num_classes"]),
             torch_threads=torch_threads)
  with open(os.path.join(job_dir, "job.json"), "w") as f:
    json.dump(job, f, indent=2, default=list)
  started = time.perf_counter()
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--torch_job={job_dir}"],
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  if proc.returncode:
    raise SystemExit(f"{prepared['name']}: the PyTorch reference failed (exit "
                     f"{proc.returncode}); its output is above.")
  with open(os.path.join(job_dir, "reference.json")) as f:
    result = json.load(f)
  result["robust"] = np.load(os.path.join(job_dir, "reference_robust.npy"))
  result["process_seconds"] = time.perf_counter() - started
  return result


def compare(mmjax_result: dict | None, reference: dict) -> dict:
  """Per-stage accuracies of both, differences in points, per-example agreement."""
  rows = [{"attack": "clean", "reference": reference["clean_accuracy"],
           "reference_seconds": reference["clean_seconds"]}]
  rows += [{"attack": s["attack"], "reference": s["robust_accuracy"],
            "reference_seconds": s["seconds"]} for s in reference["stages"]]
  out = {"rows": rows, "reference_robust_accuracy": reference["robust_accuracy"]}
  if mmjax_result is None:
    return out
  ours = {s["attack"]: s for s in mmjax_result["stages"]}
  rows[0]["mmjax"] = mmjax_result["clean_accuracy"]
  for row in rows[1:]:
    if row["attack"] in ours:
      row["mmjax"] = ours[row["attack"]]["robust_accuracy"]
      row["mmjax_seconds"] = ours[row["attack"]]["seconds"]
  for row in rows:
    if "mmjax" in row:
      row["difference_points"] = 100 * (row["mmjax"] - row["reference"])
  a, b = mmjax_result["robust"], reference["robust"]
  out.update(
      mmjax_robust_accuracy=mmjax_result["robust_accuracy"],
      difference_points=100 * (mmjax_result["robust_accuracy"] - reference["robust_accuracy"]),
      per_example_agreement=float(np.mean(a == b)),
      # Points one side broke and the other did not: where one attack is weaker.
      robust_only_under_mmjax=int(np.sum(a & ~b)),
      robust_only_under_reference=int(np.sum(~a & b)))
  return out


def _fmt(value, spec, suffix=""):
  return "" if value is None else f"{value:{spec}}{suffix}"


def markdown(report: dict) -> str:
  eps_text = ", ".join(sorted({f"{model['eps']:g}" for model in report["models"]}))
  lines = [f"# mmjax AutoAttack vs torchattacks {report['torchattacks']} (standard, Linf)",
           "",
           f"eps {eps_text}, first {report['num_examples']} eval examples, "
           f"reference gradient attacks at {report['reference_steps_label']}; "
           f"{report['machine']}, torch {report['torch']} on {report['torch_threads']} "
           f"thread(s), jax {report['jax']}. Accuracies in %, times in seconds (mmjax's "
           f"{'exclude' if report['mmjax_warm'] else 'include'} compilation).", ""]
  for model in report["models"]:
    cmp_ = model["comparison"]
    check = model["reference"]["logit_check"]
    lines += [f"## {model['name']} ({model['workdir']}, step {model['step']}, eps "
              f"{model['eps']:g})", "",
              f"Torch mirror vs flax logits on the clean examples: max |diff| "
              f"{check['max_abs_logit_difference']:.1e}, argmax agreement "
              f"{100 * check['argmax_agreement']:.1f}%.", "",
              "| stage | mmjax | reference | difference (points) | mmjax s | reference s |",
              "|---|---|---|---|---|---|"]
    for row in cmp_["rows"]:
      lines.append(
          f"| {row['attack']} | {_fmt(row.get('mmjax'), '.2%')} "
          f"| {_fmt(row['reference'], '.2%')} | {_fmt(row.get('difference_points'), '+.1f')} "
          f"| {_fmt(row.get('mmjax_seconds'), '.1f')} "
          f"| {_fmt(row['reference_seconds'], '.1f')} |")
    if "mmjax_robust_accuracy" in cmp_:
      lines += ["", f"Robust accuracy: mmjax {cmp_['mmjax_robust_accuracy']:.2%}, reference "
                f"{cmp_['reference_robust_accuracy']:.2%} ({cmp_['difference_points']:+.1f} "
                f"points); per-example agreement {cmp_['per_example_agreement']:.2%} "
                f"({cmp_['robust_only_under_mmjax']} robust only under mmjax, "
                f"{cmp_['robust_only_under_reference']} only under the reference). Total "
                f"time: mmjax {model['mmjax']['total_seconds']:.1f} s, reference "
                f"{sum(s['seconds'] for s in model['reference']['stages']):.1f} s."]
    if model["reference"]["outside_ball"]:
      lines += ["", f"Reference examples returned outside the eps-ball (not counted): "
                f"{model['reference']['outside_ball']}."]
    if model.get("mmjax") and model["mmjax"].get("warnings"):
      lines += [""] + [f"mmjax warning: {w}" for w in model["mmjax"]["warnings"]]
    lines.append("")
  settings = report["models"][0]["reference"]["stages"] if report["models"] else []
  if settings:
    lines += ["## Reference settings (torchattacks instances as run)", ""]
    lines += [f"- {s['class']}: " + ", ".join(f"{k}={v}" for k, v in s["settings"].items())
              for s in settings]
  return "\n".join(lines) + "\n"


def _jsonable(value):
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items() if k not in ("robust", "config")}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdirs", help="NAME=PATH,... of trained mmjax workdirs.")
  p.add_argument("--config", action="append",
                 help="PATH[:ARG] for every workdir, or NAME=PATH[:ARG],... per workdir "
                      "(repeatable): the config each was trained with.")
  p.add_argument("--override", action="append",
                 help="KEY=VALUE for every workdir or NAME:KEY=VALUE for one "
                      "(repeatable): the --config.KEY=VALUE overrides it was trained with.")
  p.add_argument("--num_examples", type=int, default=1000)
  p.add_argument("--eps", type=float, default=None,
                 help="Linf radius (default: each config's evals.robust.eps).")
  p.add_argument("--batch_size", type=int, default=None,
                 help="Attack batch (default: each config's train.eval_batch_size).")
  p.add_argument("--seed", type=int, default=0,
                 help="jax.random.key(seed) for mmjax; the torchattacks seed.")
  p.add_argument("--reference_steps", type=int, default=100,
                 help="APGD/APGD-T/FAB iterations of the reference (AutoAttack's 100); 0 "
                      "keeps torchattacks' AutoAttack class's own (10).")
  p.add_argument("--torch_threads", type=int, default=1,
                 help="PyTorch intra-op threads (0: torch's default, one per core). 1 by "
                      "default: on 2 cores with another process busy, torch's OpenMP on "
                      "2 threads ran APGD-20 on 100 MNIST points in 0.8-6 s, on 1 thread "
                      "in 0.3 s (each small parallel region waits for a descheduled "
                      "thread).")
  p.add_argument("--mmjax_warm", action="store_true",
                 help="Run mmjax's AutoAttack once untimed first, so its stage times "
                      "exclude compilation (they include it by default).")
  p.add_argument("--skip_mmjax", action="store_true",
                 help="Run only the reference (e.g. to develop or time it alone).")
  p.add_argument("--out", default="/tmp/autoattack_reference")
  p.add_argument("--torch_job", help=argparse.SUPPRESS)   # the child process
  return p.parse_args(argv)


def _overrides(entries, names):
  """['n:KEY=V', 'KEY=V'] -> {name: [KEY=V, ...]}."""
  out = {n: [] for n in names}
  for entry in entries or ():
    name, sep, item = entry.partition(":")
    if sep and "=" not in name:
      if name not in names:
        raise SystemExit(f"--override {entry!r}: {name!r} names no workdir.")
      out[name].append(item)
    else:
      for n in names:
        out[n].append(entry)
  return out


def main(argv=None) -> dict | None:
  args = parse_args(argv)
  if args.torch_job:
    torch_job(args.torch_job)
    return None
  import importlib.util  # pylint: disable=g-import-not-at-top
  if importlib.util.find_spec("torch") is None or importlib.util.find_spec(
      "torchattacks") is None:
    raise SystemExit("The reference needs PyTorch and torchattacks: pip install torch && "
                     "pip install --no-deps torchattacks==3.5.1")
  if not args.workdirs:
    raise SystemExit("--workdirs=NAME=PATH,... is required.")
  import jax  # pylint: disable=g-import-not-at-top
  workdirs = dict(item.split("=", 1) for item in args.workdirs.split(","))
  configs = _named(args.config, set(workdirs), "--config")
  missing = sorted(set(workdirs) - set(configs))
  if missing:
    raise SystemExit(f"--config: no config for {missing}.")
  overrides = _overrides(args.override, set(workdirs))
  os.makedirs(args.out, exist_ok=True)
  report = {"num_examples": args.num_examples, "seed": args.seed,
            "mmjax_warm": args.mmjax_warm,
            "reference_steps": args.reference_steps,
            "reference_steps_label": (f"{args.reference_steps} iterations"
                                      if args.reference_steps else
                                      "torchattacks' class defaults (10 iterations)"),
            "machine": f"{platform.processor() or platform.machine()}, "
                       f"{os.cpu_count()} CPUs", "jax": jax.__version__, "models": []}
  for name, workdir in workdirs.items():
    config = load_config(configs[name], overrides[name])
    eps = args.eps if args.eps is not None else float(config.evals.robust.eps)
    batch_size = args.batch_size or int(config.train.eval_batch_size)
    print(f"[{name}] {workdir}: restoring, {args.num_examples} examples, eps {eps:g}",
          flush=True)
    prepared = prepare(name, workdir, config, args.num_examples, batch_size)
    mmjax_result = None
    if not args.skip_mmjax:
      if args.mmjax_warm:   # compiles every stage the examples reach; results discarded
        run_mmjax(prepared, eps=eps, seed=args.seed, batch_size=batch_size)
      mmjax_result = run_mmjax(prepared, eps=eps, seed=args.seed, batch_size=batch_size)
      for stage in mmjax_result["stages"]:
        print(f"  mmjax {stage['attack']}: {stage['robust_accuracy']:.4f} "
              f"({stage['seconds']:.1f} s)", flush=True)
    reference = run_reference_child(prepared, os.path.join(args.out, name), eps=eps,
                                    seed=args.seed, batch_size=batch_size,
                                    reference_steps=args.reference_steps,
                                    torch_threads=args.torch_threads)
    robust = {"reference": reference["robust"]}
    if mmjax_result is not None:
      robust["mmjax"] = mmjax_result["robust"]
    np.savez(os.path.join(args.out, name, "robust.npz"), labels=prepared["labels"], **robust)
    report.update(torch=reference["torch"], torchattacks=reference["torchattacks"],
                  torch_threads=reference["threads"])
    report["models"].append(dict(
        name=name, workdir=workdir, step=prepared["step"], eps=eps, batch_size=batch_size,
        mmjax=mmjax_result, reference=reference,
        comparison=compare(mmjax_result, reference)))
  text = markdown(report)
  print("\n" + text)
  with open(os.path.join(args.out, "autoattack_reference.md"), "w") as f:
    f.write(text)
  with open(os.path.join(args.out, "autoattack_reference.json"), "w") as f:
    json.dump(_jsonable(report), f, indent=2)
  print(f"Wrote {args.out}/autoattack_reference.{{md,json}}")
  return report


if __name__ == "__main__":
  main()
