"""The benchmark suite (mmjax/bench/suite.py): its entries, its table, and one real run of
the GPU list's smoke-test variant on the CPU (a failing entry becomes an error row, the
others still run, and a PGD-k row is set against its clean base)."""
import json

import pytest

from mmjax.bench import suite


def test_entries_per_device_and_variant():
  gpu = suite.entries_for("gpu")
  assert gpu[0].name == "gpt2" and "model.attention=cudnn" in gpu[0].overrides
  assert all(e.config.endswith(":gpu") for e in gpu if e.config.startswith("configs/bench/"))
  tiny = suite.entries_for("gpu", "tiny", ["vit_b16", "vit_b16_pgd3"])
  assert [e.config for e in tiny] == ["configs/bench/vit_b16.py:tiny"] * 2
  pgd = tiny[1]
  assert pgd.base == "vit_b16" and pgd.k == 3
  assert {"adversarial.kind=madry", "adversarial.attack=pgd",
          "adversarial.steps=3"} <= set(pgd.overrides)
  # Configs outside configs/bench/ have no variants and keep their path.
  assert suite.entries_for("cpu", "tiny", ["quickstart"])[0].config == "configs/quickstart.py"
  cpu_pgd = suite.entries_for("cpu", only=["digits_cnn_pgd10"])[0]
  assert cpu_pgd.needs == "tensorflow" and cpu_pgd.base == "digits_cnn"


def test_unknown_device_or_entry_is_refused():
  with pytest.raises(ValueError, match="Unknown --device='tpu'"):
    suite.entries_for("tpu")
  with pytest.raises(ValueError, match=r"Unknown entries \['gpt3'\] .*choose from"):
    suite.entries_for("cpu", only=["gpt2", "gpt3"])
  with pytest.raises(SystemExit):   # argparse's error, exit status 2
    suite.main(["--device=cpu", "--out=/tmp/unused", "--only=nope"])


def test_comparisons_needing_missing_modules_are_dropped(monkeypatch):
  entry = suite.entries_for("cpu", only=["gpt2"])[0]
  monkeypatch.setattr(suite, "_importable", lambda module: module != "torch")
  keep, dropped = suite.runnable_comparisons(entry)
  assert keep == ("bare",)
  assert dropped == ["torch_eager (needs torch)", "torch_compile (needs torch)"]
  cmd = suite.bench_command(entry, "/tmp/w")
  assert cmd[1:] == ["-m", "mmjax.main", "--config=configs/bench/gpt2_124m.py:cpu",
                     "--workdir=/tmp/w", "--mode=bench",
                     "--config.bench.compare=('bare',)"]


def _report(step_s, **extra):
  return {"devices": 1, "device": "cpu", "global_batch": 8, "dtype": "float32",
          "pipelined_mean_s": step_s, "median_s": step_s * 0.9, "p10_s": step_s * 0.8,
          "p90_s": step_s,
          "examples_per_s": 8 / step_s, "tokens_per_s": None,
          "model_tflops_per_s": 0.5, "mfu": 0.25, "compile_s": 1.0,
          "peak_memory_bytes": 2**20, **extra}


def test_table_rows():
  rows = [{"name": "vit", "report": _report(0.1, overhead_vs_bare=0.02), "base": None, "k": 0},
          {"name": "vit_pgd3", "report": _report(0.35), "base": "vit", "k": 3,
           "dropped": ["pipeline (needs tensorflow)"]},
          {"name": "bert", "error": "exit status 1", "log_tail": "boom"},
          {"name": "gpt2", "skipped": "the budget ran out"}]
  table = suite.markdown_table(rows, {"n": 64, "dtype": "float32", "flops_per_s": 1e12})
  lines = table.splitlines()
  assert lines[2].startswith("| vit | 1 x cpu | 8 | float32 | 100.0 ms; 90.0 (80.0–100.0) |")
  assert "| 25.0% | 50.0% |" in lines[2]   # the bench's peak, then the measured matmul
  assert "vs bare jit +2.0%" in lines[2]
  assert "3.50x the clean step (PGD-3 budget 4.4x)" in lines[3]
  assert "no pipeline (needs tensorflow)" in lines[3]
  assert "| bert | | | | exit status 1 |" in lines[4]
  assert "the budget ran out" in lines[5]
  assert "Measured matmul: 64² float32 at 1.000 TFLOP/s." in table


def test_smoke_run_of_the_gpu_list_on_the_cpu(tmp_path):
  out = tmp_path / "out"
  record = suite.run_suite("gpu", str(out), variant="tiny",
                           only=["gpt2", "vit_b16", "vit_b16_pgd1"], matmul_n=128,
                           workdir=str(tmp_path / "work"), entry_timeout_s=300)
  gpt2, vit, pgd = record["rows"]
  # cuDNN attention cannot run on a CPU: one clear error row, and the run goes on.
  assert gpt2["error"].startswith("exit status 2: mmjax: error: config.model.attention="
                                  "'cudnn' cannot run")
  assert vit["report"]["steps"] == 2 and vit["report"]["overhead_vs_bare"] is not None
  assert pgd["report"]["adversarial"] == "madry" and pgd["base"] == "vit_b16"
  assert record["matmul"]["flops_per_s"] > 0
  saved = json.loads((out / "suite.json").read_text())
  assert [r["name"] for r in saved["rows"]] == ["gpt2", "vit_b16", "vit_b16_pgd1"]
  table = (out / "suite.md").read_text()
  assert "x the clean step (PGD-1 budget 2.2x)" in table
  assert "| gpt2 | | | | exit status 2: mmjax: error:" in table


def test_a_matmul_measurement_that_times_out_is_an_error_not_a_crash():
  matmul = suite.measure_matmul("cpu", 2048, timeout_s=0.01)
  assert matmul == {"n": 2048, "dtype": "float32", "error": "timed out after 0 s"}
  assert "Measured matmul" not in suite.markdown_table([], matmul)
