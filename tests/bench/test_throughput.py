"""--mode=bench: a report whose numbers are consistent with each other, the bare-jit and
real-pipeline comparisons, no TensorFlow needed, and bad settings refused."""
import json
import os
import statistics
import subprocess
import sys

import pytest

from mmjax.config import load_config_file
from mmjax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_gpt():
  c = load_config_file(os.path.join(REPO, "configs/bench/gpt2_124m.py"), "tiny")
  c.train.batch_size = 8
  return c


def test_report_is_consistent(tmp_path):
  from mmjax.bench import throughput
  c = tiny_gpt()
  c.bench.compare = ("bare",)
  r = throughput.run_bench(c, str(tmp_path))
  assert json.loads((tmp_path / "bench.json").read_text())["mfu"] == pytest.approx(r["mfu"])
  assert r["examples_per_s"] == pytest.approx(8 / r["pipelined_mean_s"])
  assert r["tokens_per_s"] == pytest.approx(8 * 32 / r["pipelined_mean_s"])
  d, f, t, v, depth = 64, 256, 32, 260, 2
  forward = 8 * t * (depth * (8 * d * d + 4 * d * f + 4 * t * d) + 2 * d * v)
  assert r["model_flops_per_step"] == pytest.approx(3 * forward, rel=1e-6)
  assert r["mfu"] == pytest.approx(r["model_flops_per_step"] / (
      r["pipelined_mean_s"] * r["peak_flops_per_device"]))
  assert r["p10_s"] <= r["median_s"] <= r["p90_s"]
  assert r["peak_flops_per_device"] > 0 and "measured" in r["peak_source"]
  assert r["bare"]["pipelined_mean_s"] > 0
  # The overhead is the median over rounds of mmjax's step over the bare one in the
  # same round; each round's means are in the report.
  rounds = r["round_means_s"]
  assert len(rounds["mmjax"]) == len(rounds["bare"]) == r["rounds"] == 3
  assert r["overhead_vs_bare"] == pytest.approx(statistics.median(
      m / b for m, b in zip(rounds["mmjax"], rounds["bare"])) - 1)
  assert r["pipelined_mean_s"] == pytest.approx(statistics.median(rounds["mmjax"]))
  # The CPU's peak: the reference matmul timed in the same rounds, beside the steps.
  assert len(rounds["matmul_peak"]) == 3
  assert r["peak_flops_per_device"] == pytest.approx(
      2 * 2048**3 / statistics.median(rounds["matmul_peak"]))
  assert "overhead_vs_matmul_peak" not in r and "matmul_peak" not in r
  assert r["compile_s"] > 0 and r["peak_memory_bytes"] > 0
  assert not (tmp_path / "checkpoints").exists()


def test_real_pipeline_comparison(digits_data_dir, tmp_path):
  from mmjax.bench import throughput
  c = load_config_file(os.path.join(REPO, "configs/digits_cnn.py"))
  c.data.data_dir = digits_data_dir
  c.bench.update(dict(steps=2, warmup=1, compare=("pipeline",)))
  r = throughput.run_bench(c, str(tmp_path))
  assert r["pipeline"]["pipelined_mean_s"] > 0
  assert r["pipeline"]["alone_s"] > 0 and r["pipeline"]["alone_cpu_s"] > 0
  assert "vs synthetic; alone" in throughput.format_report(r)
  assert r["tokens_per_s"] is None               # an image model


def test_bench_runs_without_tensorflow(tmp_path):
  # TensorFlow made unimportable, as on accelerator images that lack it.
  code = ("import sys; sys.modules['tensorflow'] = None; "
          "sys.modules['tensorflow_datasets'] = None; "
          "from mmjax.main import run; run()")
  proc = subprocess.run(
      [sys.executable, "-c", code, "--config=configs/bench/vit_b16.py:tiny",
       f"--workdir={tmp_path}", "--mode=bench", "--config.bench.steps=2",
       "--config.bench.warmup=1", "--config.train.batch_size=8"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "MFU" in proc.stderr
  assert json.loads((tmp_path / "bench.json").read_text())["steps"] == 2


def test_bad_bench_settings_are_refused(tmp_path):
  from mmjax.bench import throughput
  c = tiny_gpt()
  c.bench.compare = ("pytorch",)
  with pytest.raises(ConfigError, match="bench.compare"):
    throughput.run_bench(c, str(tmp_path))
  c.bench.compare = ()
  for key in ("steps", "warmup", "rounds"):
    bad = tiny_gpt()
    bad.bench[key] = 0
    with pytest.raises(ConfigError, match=f"bench.steps, bench.warmup and bench.rounds .*"
                                          f"{key}=0"):
      throughput.run_bench(bad, str(tmp_path))


def test_peak_table_covers_the_lent_gpus():
  from mmjax.bench import throughput
  fake = type("Device", (), {"platform": "gpu", "device_kind": "NVIDIA H100 80GB HBM3"})
  assert throughput.datasheet_peak(fake, "bfloat16")[0] == 989e12
  fake.device_kind = "NVIDIA H200"
  assert throughput.datasheet_peak(fake, "bfloat16")[0] == 989e12
  fake.device_kind = "NVIDIA H100 PCIe"
  assert throughput.datasheet_peak(fake, "bfloat16")[0] == 756e12
  fake.device_kind = "Mystery GPU"
  with pytest.raises(ConfigError, match="PEAK_FLOPS"):
    throughput.datasheet_peak(fake, "bfloat16")


BENCH_CONFIGS = ("gpt2_124m", "bert_base", "vit_b16")   # :tiny of gpt2 and vit run above
# Full-size parameter counts: GPT-2 small exactly; ViT-B/16 as timm's
# vit_base_patch16_224 (86,567,656); BERT-base's encoder and tied embeddings, without
# token-type embeddings, pooler and the MLM head's transform (BERT's 110M has them).
PARAMS = {"gpt2_124m": 124_439_808, "vit_b16": 86_567_656, "bert_base": 108_890_112}


@pytest.mark.parametrize("name", BENCH_CONFIGS)
def test_bench_configs(name, tmp_path):
  import numpy as np
  from mmjax import models
  from mmjax.bench import throughput
  path = os.path.join(REPO, "configs", "bench", f"{name}.py")
  gpu = load_config_file(path, "gpu").model
  example = ({"image": np.zeros((1, 224, 224, 3), np.float32)} if gpu.name == "vit" else
             {"text": np.zeros((1, gpu.max_len), np.int32)})
  assert models.param_count(models.abstract_variables(models.build_model(gpu), example)[
      "params"]) == PARAMS[name]
  if name == "bert_base":
    r = throughput.run_bench(load_config_file(path, "tiny"), str(tmp_path))
    assert r["steps"] == 2 and r["objective"] == "mlm" and r["model_flops_per_step"] > 0
