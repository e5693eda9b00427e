"""Tracking sinks (W&B offline, MLflow), the run's curves and `mmjax.compare`, on tiny
runs read back with each library's own reader.

One run trains 10 steps with every installed sink and is resumed to 20 (one tracking
run, not two); a second run at another learning rate is the other side of compare.
Both have the `report` evaluator, which draws a confusion PNG and writes a JSON report.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from mmjax.errors import ConfigError

HAS = {m: importlib.util.find_spec(m) is not None for m in ("wandb", "mlflow")}


def _config(data_dir, lr=3e-3, **train):
  from tests.conftest import tiny_vit_config
  c = tiny_vit_config(data_dir, checkpoint_every=10, plots=True, **train)
  c.optim.learning_rate = lr
  c.evals.report = dict(type="report", kind="classification", num_examples=200)
  return c


@pytest.fixture(scope="module")
def runs(digits_data_dir, tmp_path_factory):
  """{'a': workdir trained 10 + resumed 10 steps with every installed sink, 'b': 20
  steps at lr 1e-3 with the default loggers}."""
  from mmjax.train import loop
  root = tmp_path_factory.mktemp("tracking")
  a, b = str(root / "lr3e-3"), str(root / "lr1e-3")
  c = _config(digits_data_dir, total_steps=10)
  c.train.loggers = ("tensorboard", "jsonl") + tuple(m for m in ("wandb", "mlflow")
                                                      if HAS[m])
  loop.train_and_evaluate(c, a)
  c.train.total_steps = 20
  loop.train_and_evaluate(c, a)   # resumes from the checkpoint at step 10
  loop.train_and_evaluate(_config(digits_data_dir, lr=1e-3, total_steps=20), b)
  return {"a": a, "b": b}


def _pairs(got, want):
  """Equal steps, and values equal to float32 precision."""
  return ([s for s, _ in got] == [s for s, _ in want]
          and [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6))


def _jsonl(workdir, split, key):
  """[(step, value)] of `key` in the `split` rows of WORKDIR/metrics.jsonl."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [(r["step"], r[key]) for r in rows if r["split"] == split and key in r]


def test_mlflow_run_reads_back_with_its_client(runs):
  pytest.importorskip("mlflow")
  from mlflow.tracking import MlflowClient
  a = runs["a"]
  client = MlflowClient(f"file:{a}/mlruns")
  experiment = client.get_experiment_by_name("mmjax")
  found = client.search_runs([experiment.experiment_id])
  assert len(found) == 1   # the resumed run continued it
  run_id = found[0].info.run_id
  assert open(os.path.join(a, "mlflow_run_id")).read().strip() == run_id
  assert found[0].info.status == "FINISHED"
  assert found[0].info.run_name == "lr3e-3"
  assert found[0].data.params["optim.learning_rate"] == "0.003"
  assert found[0].data.params["train.loggers"].startswith('["tensorboard", "jsonl"')
  for split, key in (("train", "loss"), ("eval", "report/accuracy"), ("train", "lr")):
    history = client.get_metric_history(run_id, f"{split}/{key}")
    assert _pairs([(m.step, m.value) for m in history], _jsonl(a, split, key))
  assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [5, 10, 15,
                                                                                20]
  reports = [f.path for f in client.list_artifacts(run_id, "reports/step_10")]
  reports += [f.path for f in client.list_artifacts(run_id, "reports/step_20")]
  assert reports == ["reports/step_10/report.json", "reports/step_20/report.json"]
  images = [f.path for f in client.list_artifacts(run_id, "images")
            if f.path.endswith(".png")]
  assert len(images) == 2 and all("report~confusion" in p for p in images)
  assert {p.split("+step+")[1].split("+")[0] for p in images} == {"10", "20"}


def _wandb_records(run_dir):
  """The records of an offline W&B run, as W&B's own reader prints them."""
  out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json",
                        run_dir], capture_output=True, text=True, timeout=120)
  if out.returncode != 0:
    pytest.skip(f"this wandb cannot read runs back (`wandb leet inspect`): {out.stderr}")
  return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_wandb_offline_run_reads_back_with_its_reader(runs):
  pytest.importorskip("wandb")
  a = runs["a"]
  run_id = open(os.path.join(a, "wandb_run_id")).read().strip()
  wandb_dir = os.path.join(a, "wandb")
  # Offline, each process writes its own directory; both are the one run `run_id`,
  # which `wandb sync` uploads as one run.
  dirs = sorted(d for d in os.listdir(wandb_dir) if d.startswith("offline-run-"))
  assert len(dirs) == 2 and all(d.endswith(f"-{run_id}") for d in dirs)
  history, artifacts, config = {}, [], {}
  for d in dirs:
    records = _wandb_records(os.path.join(wandb_dir, d))
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["run_id"] == run_id and run["project"] == "mmjax"
    config.update(run["config"]["update"])
    assert [r["exit"]["exit_code"] for r in records if r["type"] == "exit"] == [0]
    for r in records:
      if r["type"] == "history":
        history.setdefault(r["history"]["step"]["num"], {}).update(r["history"]["item"])
      if r["type"] == "artifact":
        artifacts += [c["path"] for c in r["artifact"]["manifest"]["contents"]]
  assert config["optim.learning_rate"] == 0.003
  assert sorted(history) == [5, 10, 15, 20]
  for split, key in (("train", "loss"), ("eval", "report/accuracy")):
    got = [(s, h[f"{split}/{key}"]) for s, h in sorted(history.items())
           if f"{split}/{key}" in h]
    assert _pairs(got, _jsonl(a, split, key))
  for step in (10, 20):
    image = history[step]["report/confusion.path"]
    assert os.path.exists(os.path.join(wandb_dir, dirs[step // 20], "files", image))
  assert artifacts == ["reports/step_10/report.json", "reports/step_20/report.json"]


def test_every_run_draws_its_curves_and_eval_mode_redraws_them(runs, digits_data_dir):
  from matplotlib import image
  from mmjax.train import loop
  for workdir in runs.values():
    names = sorted(os.listdir(os.path.join(workdir, "plots")))
    assert names == ["accuracy.png", "grad_norm.png", "loss.png", "lr.png"]
    for name in names:
      pixels = image.imread(os.path.join(workdir, "plots", name))
      assert pixels.shape == (400, 640, 4) and pixels[..., :3].std() > 0.05
  b = runs["b"]
  os.remove(os.path.join(b, "plots", "loss.png"))
  loop.evaluate(_config(digits_data_dir, lr=1e-3, total_steps=20), b, ["loss"])
  assert os.path.exists(os.path.join(b, "plots", "loss.png"))


def test_compare_plots_runs_on_shared_axes_and_tables_their_final_values(runs, tmp_path,
                                                                        capsys):
  from matplotlib import image
  from mmjax import compare
  out = str(tmp_path / "cmp")
  assert compare.main([runs["a"], runs["b"], "--metrics=eval/accuracy,train/loss",
                       f"--out={out}"]) == 0
  md = capsys.readouterr().out
  assert sorted(os.listdir(out)) == ["compare.md", "eval_accuracy.png", "train_loss.png"]
  assert image.imread(os.path.join(out, "eval_accuracy.png")).shape == (400, 640, 4)
  assert open(os.path.join(out, "compare.md")).read() == md
  lines = md.splitlines()
  assert lines[0] == "| run | final step | eval/accuracy | train/loss |"
  for line, run in zip(lines[2:], ("a", "b")):
    name = os.path.basename(runs[run])
    acc, loss = _jsonl(runs[run], "eval", "accuracy")[-1], _jsonl(runs[run], "train",
                                                                  "loss")[-1]
    assert line == f"| {name} | 20 | {acc[1]:.4g} | {loss[1]:.4g} |"
  # Without --metrics: every plotted family's metrics.
  paths, _ = compare.compare([runs["a"], runs["b"]], out=str(tmp_path / "all"))
  assert {os.path.basename(p) for p in paths} >= {"eval_accuracy.png", "train_lr.png",
                                                  "eval_report_accuracy.png"}


def test_compare_refuses_a_dir_that_is_no_run_and_an_unknown_metric(runs, tmp_path,
                                                                   capsys):
  from mmjax import compare
  with pytest.raises(ConfigError, match=f"{tmp_path} is not an mmjax run"):
    compare.compare([runs["a"], str(tmp_path)])
  with pytest.raises(ConfigError, match="Did you mean 'eval/accuracy'"):
    compare.compare([runs["a"]], ["eval/acuracy"], out=str(tmp_path / "x"))
  assert compare.main([str(tmp_path / "missing")]) == 2
  assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("loggers, plots, message", [
    (("tensorbord", "jsonl"), True, "Did you mean 'tensorboard'"),
    (("tensorboard",), True, "train.plots draws WORKDIR/metrics.jsonl"),
    (("jsonl", "jsonl"), True, "more than once"),
])
def test_bad_loggers_are_refused_before_compute(tiny_config, tmp_path, loggers, plots,
                                                message):
  from mmjax.train import loop
  c = tiny_config()
  c.train.loggers, c.train.plots = loggers, plots
  with pytest.raises(ConfigError, match=message):
    loop.train_and_evaluate(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("module", ["wandb", "mlflow"])
def test_a_logger_whose_package_is_missing_is_refused_naming_the_extra(
    tiny_config, tmp_path, monkeypatch, module):
  from mmjax.train import loop
  monkeypatch.setitem(sys.modules, module, None)   # `import module` now fails
  c = tiny_config()
  c.train.loggers = ("jsonl", module)
  with pytest.raises(ConfigError, match=rf"pip install 'mmjax\[{module}\]'"):
    loop.train_and_evaluate(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_bad_tracking_options_are_refused(tiny_config):
  from mmjax.train import writers
  c = tiny_config()
  c.train.loggers = ("jsonl", "wandb")
  c.tracking.wandb.mode = "ofline"
  with pytest.raises(ConfigError, match="tracking.wandb.mode='ofline'"):
    writers.check_config(c, installed=False)
  c.tracking.wandb.mode = "offline"
  c.tracking.wandb.projct = "x"
  with pytest.raises(ConfigError, match="projct"):
    writers.check_config(c, installed=False)


def test_mlflow_tracking_uri_is_honoured(tmp_path):
  pytest.importorskip("mlflow")
  from mlflow.tracking import MlflowClient
  from mmjax.train import sink_mlflow
  uri = f"file:{tmp_path}/elsewhere"
  had = "MLFLOW_ALLOW_FILE_STORE" in os.environ
  try:
    sink = sink_mlflow.MlflowSink(str(tmp_path), {"tracking_uri": uri, "experiment": "e"},
                                  None, None)
    sink.scalars(3, "eval", {"accuracy": 0.5}, 1.0)
    sink.close()
    history = MlflowClient(uri).get_metric_history(sink.run_id, "eval/accuracy")
    assert [(m.step, m.value) for m in history] == [(3, 0.5)]
    assert not os.path.exists(tmp_path / "mlruns")
  finally:
    if not had:
      os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
