r"""The benchmark table of docs/benchmarks.md for one device, in one command.

  python -m mmjax.bench.suite --device=cpu --out=/tmp/suite        # this CPU
  python -m mmjax.bench.suite --device=gpu --out=$OUT --budget_s=480  # a lent GPU

Runs each entry of the device's list (`ENTRIES`) as its own `--mode=bench` process (a
clean process per measurement; a failure or a timeout loses one row, not the run), then
writes `suite.json` (every entry's full bench.json, or its error and the end of its log)
and `suite.md` (one markdown table) into `--out`, and prints the table. The entries are
in priority order and each starts only while `--budget_s` lasts, so a short lease on an
accelerator yields the most important rows first; the results so far are rewritten after
every entry, so a run killed at its limit still leaves them.

Besides the bench reports, the suite measures the device's dense matmul throughput in
the entries' compute dtype (a child process: [n, n] @ [n, n], `MATMUL_N`), so each row
gives its MFU against the data sheet (the bench's own) and against what the chip
actually delivers. PGD-k entries name a clean `base` entry; their row gives the step
time as a multiple of the base's (the target: at most 1.1 (k + 1)).

Needs no TensorFlow: rows that need the input pipeline ('pipeline' comparisons) run
only where TensorFlow is importable. `--variant=tiny` swaps every bench config for its
`:tiny` smoke-test variant (seconds per entry; what the tests run).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MATMUL_N = {"cpu": 2048, "gpu": 8192}
DTYPE = {"cpu": "float32", "gpu": "bfloat16"}
# Comparisons that need a module which accelerator images may lack; an entry drops them
# (and says so in its row) where the module is missing.
COMPARISON_NEEDS = {"pipeline": "tensorflow", "torch_eager": "torch",
                    "torch_compile": "torch"}


@dataclasses.dataclass(frozen=True)
class Entry:
  """One row: `config` (a configs/ path with its variant) benchmarked with `overrides`
  (`--config.KEY=VALUE` flags without the prefix) and the comparisons `compare`.
  `base`: for an adversarial entry, the name of the clean entry it is measured against;
  `k`: its attack steps. `needs`: a module that must be importable, else the entry is
  skipped (the input pipeline needs TensorFlow)."""
  name: str
  config: str
  overrides: tuple[str, ...] = ()
  compare: tuple[str, ...] = ()
  base: str | None = None
  k: int = 0
  needs: str | None = None


def _pgd(k: int, base: Entry, eps: float) -> Entry:
  """PGD-k (Madry) training of `base`'s config at L-inf radius `eps` (step eps / 4),
  measured against the clean entry `base`."""
  attack = ("adversarial.kind=madry", "adversarial.attack=pgd", f"adversarial.eps={eps}",
            f"adversarial.steps={k}", f"adversarial.step_size={eps / 4}")
  return Entry(f"{base.name}_pgd{k}", base.config, base.overrides + attack,
               base=base.name, k=k, needs=base.needs)


_GPU_VIT = Entry("vit_b16", "configs/bench/vit_b16.py:gpu", compare=("bare",))
_CPU_CNN = Entry("digits_cnn", "configs/digits_cnn.py", ("bench.steps=30",),
                 needs="tensorflow")   # its shapes come from the embedded dataset


# Per device, in priority order (a short lease runs the first rows).
ENTRIES: dict[str, tuple[Entry, ...]] = {
    "gpu": (
        Entry("gpt2", "configs/bench/gpt2_124m.py:gpu", ("model.attention=cudnn",),
              compare=("bare",)),
        _GPU_VIT,
        Entry("gpt2_xla_attention", "configs/bench/gpt2_124m.py:gpu",
              ("model.attention=xla",)),
        Entry("bert_base", "configs/bench/bert_base.py:gpu", compare=("bare",)),
        _pgd(1, _GPU_VIT, 8 / 255),
        _pgd(3, _GPU_VIT, 8 / 255),
        Entry("quickstart", "configs/quickstart.py", compare=("bare", "pipeline")),
    ),
    "cpu": (
        Entry("gpt2", "configs/bench/gpt2_124m.py:cpu",
              compare=("bare", "torch_eager", "torch_compile")),
        Entry("bert_base", "configs/bench/bert_base.py:cpu", compare=("bare",)),
        Entry("vit_b16", "configs/bench/vit_b16.py:cpu", compare=("bare",)),
        Entry("quickstart", "configs/quickstart.py", ("bench.steps=4", "bench.rounds=21"),
              compare=("bare", "pipeline")),
        _CPU_CNN,
        _pgd(1, _CPU_CNN, 0.1),
        _pgd(10, _CPU_CNN, 0.1),
    ),
}


def entries_for(device: str, variant: str | None = None,
                only: list[str] | None = None) -> list[Entry]:
  """The device's entries, each config switched to `variant` (e.g. 'tiny') where it is a
  configs/bench/ config, restricted to the names in `only` (ValueError for unknown ones)."""
  if device not in ENTRIES:
    raise ValueError(f"Unknown --device={device!r}; choose one of {sorted(ENTRIES)}.")
  entries = list(ENTRIES[device])
  if only:
    unknown = sorted(set(only) - {e.name for e in entries})
    if unknown:
      raise ValueError(f"Unknown entries {unknown} for --device={device}; choose from "
                       f"{[e.name for e in entries]}.")
    entries = [e for e in entries if e.name in only]
  if variant:
    entries = [dataclasses.replace(e, config=e.config.split(":")[0] + ":" + variant)
               if e.config.startswith("configs/bench/") else e for e in entries]
  return entries


def _importable(module: str) -> bool:
  return importlib.util.find_spec(module) is not None


def runnable_comparisons(entry: Entry) -> tuple[tuple[str, ...], list[str]]:
  """(the entry's comparisons that can run here, those dropped for a missing module)."""
  keep = tuple(c for c in entry.compare
               if c not in COMPARISON_NEEDS or _importable(COMPARISON_NEEDS[c]))
  return keep, [f"{c} (needs {COMPARISON_NEEDS[c]})" for c in entry.compare if c not in keep]


def bench_command(entry: Entry, workdir: str) -> list[str]:
  """The `python -m mmjax.main --mode=bench` command line of one entry."""
  cmd = [sys.executable, "-m", "mmjax.main", f"--config={entry.config}",
         f"--workdir={workdir}", "--mode=bench"]
  cmd += [f"--config.{o}" for o in entry.overrides]
  compare, _ = runnable_comparisons(entry)
  if compare:
    cmd.append(f"--config.bench.compare={compare!r}")
  return cmd


def measure_matmul(device: str, n: int, timeout_s: float) -> dict[str, Any]:
  """The [n, n] @ [n, n] throughput in the device's compute dtype, in a child process
  (so that this process never holds the accelerator's memory while entries run)."""
  dtype = DTYPE[device]
  code = ("import json, jax.numpy as jnp; from mmjax.bench import flops; "
          f"print(json.dumps(flops.dense_matmul_peak(n={n}, dtype=jnp.{dtype}, repeats=20)))")
  try:
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout_s, check=False)
  except subprocess.TimeoutExpired:
    return {"n": n, "dtype": dtype, "error": f"timed out after {timeout_s:.0f} s"}
  if proc.returncode:
    return {"n": n, "dtype": dtype, "error": proc.stderr[-2000:]}
  return {"n": n, "dtype": dtype, "flops_per_s": float(proc.stdout.strip().splitlines()[-1])}


def run_entry(entry: Entry, workdir: str, timeout_s: float) -> dict[str, Any]:
  """Runs one entry; -> {'name', 'command', 'seconds', 'report' | 'error' + 'log_tail'}."""
  os.makedirs(workdir, exist_ok=True)
  cmd = bench_command(entry, workdir)
  _, dropped = runnable_comparisons(entry)
  row: dict[str, Any] = {"name": entry.name, "config": entry.config,
                         "overrides": list(entry.overrides), "dropped": dropped,
                         "command": " ".join(cmd[1:])}
  start = time.perf_counter()
  try:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    failed, log = proc.returncode != 0, proc.stderr
    why = f"exit status {proc.returncode}"
  except subprocess.TimeoutExpired as e:
    failed, why = True, f"timed out after {timeout_s:.0f} s"
    log = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
  row["seconds"] = time.perf_counter() - start
  report = os.path.join(workdir, "bench.json")
  if failed or not os.path.exists(report):
    # mmjax's own errors are one line at the end ("mmjax: error: ..."): the row shows it.
    last = next((line for line in reversed(log.splitlines()) if line.strip()), "")
    row.update(error=f"{why if failed else 'no bench.json written'}: {last[:300]}",
               log_tail=log[-3000:])
  else:
    with open(report) as f:
      row["report"] = json.load(f)
  return row


def _fmt(value, spec: str, scale: float = 1.0, suffix: str = "") -> str:
  return "" if value is None else f"{value * scale:{spec}}{suffix}"


def markdown_table(rows: list[dict[str, Any]], matmul: dict[str, Any]) -> str:
  """The rows as a markdown table (failed and skipped rows say why)."""
  measured = matmul.get("flops_per_s")
  by_name = {r["name"]: r for r in rows}
  lines = ["| entry | device | batch | dtype | step (back to back); one by one: median "
           "(p10–p90) | examples/s | "
           "tokens/s | model TFLOP/s | MFU (bench peak) | MFU (measured matmul) | "
           "compile | peak memory | comparisons |",
           "|" + "---|" * 13]
  for row in rows:
    r = row.get("report")
    if r is None:
      why = row.get("error", row.get("skipped", "")).replace("|", "\\|")
      lines.append(f"| {row['name']} | | | | {why} |" + " |" * 8)
      continue
    notes = []
    if "overhead_vs_bare" in r:
      notes.append(f"vs bare jit {100 * r['overhead_vs_bare']:+.1f}%")
    if "pipeline_slowdown" in r:
      notes.append(f"real pipeline {100 * r['pipeline_slowdown']:+.1f}%")
    for mode in ("torch_eager", "torch_compile"):
      if f"speedup_vs_{mode}" in r:
        notes.append(f"{r[f'speedup_vs_{mode}']:.2f}x {mode}")
    notes += [f"no {d}" for d in row.get("dropped", [])]
    base = by_name.get(row.get("base") or "", {}).get("report")
    if base:
      k = row["k"]
      ratio = r["pipelined_mean_s"] / base["pipelined_mean_s"]
      notes.append(f"{ratio:.2f}x the clean step (PGD-{k} budget {1.1 * (k + 1):.1f}x)")
    step = (f"{r['pipelined_mean_s'] * 1e3:.1f} ms; {r['median_s'] * 1e3:.1f} "
            f"({r['p10_s'] * 1e3:.1f}–{r['p90_s'] * 1e3:.1f})")
    mfu_measured = (r["model_tflops_per_s"] * 1e12 / (r["devices"] * measured)
                    if measured and r["dtype"] == matmul["dtype"] else None)
    lines.append(" | ".join([
        f"| {row['name']}", f"{r['devices']} x {r['device']}", str(r["global_batch"]),
        r["dtype"], step, f"{r['examples_per_s']:.1f}", _fmt(r["tokens_per_s"], ",.0f"),
        f"{r['model_tflops_per_s']:.3f}", _fmt(r["mfu"], ".1f", 100, "%"),
        _fmt(mfu_measured, ".1f", 100, "%"), f"{r['compile_s']:.1f} s",
        _fmt(r["peak_memory_bytes"], ",.0f", 2**-20, " MiB"), "; ".join(notes)]) + " |")
  if measured:
    lines.append(f"\nMeasured matmul: {matmul['n']}² {matmul['dtype']} at "
                 f"{measured / 1e12:.3f} TFLOP/s.")
  return "\n".join(lines)


def run_suite(device: str, out: str, *, variant: str | None = None,
              only: list[str] | None = None, budget_s: float = 3600,
              entry_timeout_s: float = 900, workdir: str | None = None,
              matmul_n: int | None = None) -> dict[str, Any]:
  """Runs the device's entries within `budget_s`; writes out/suite.json and suite.md
  after each entry; -> the suite's record. `matmul_n`: the size of the measured matmul
  (default MATMUL_N[device])."""
  entries = entries_for(device, variant, only)
  os.makedirs(out, exist_ok=True)
  workdir = workdir or tempfile.mkdtemp(prefix="mmjax_suite_")
  deadline = time.monotonic() + budget_s
  record: dict[str, Any] = {"device": device, "variant": variant,
                            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                            "matmul": measure_matmul(device, matmul_n or MATMUL_N[device],
                                                    min(entry_timeout_s, 300)),
                            "rows": []}
  for entry in entries:
    left = deadline - time.monotonic()
    if entry.needs and not _importable(entry.needs):
      row = {"name": entry.name, "skipped": f"needs {entry.needs}, not installed"}
    elif left < 30:
      row = {"name": entry.name, "skipped": "the budget ran out"}
    else:
      row = run_entry(entry, os.path.join(workdir, entry.name), min(entry_timeout_s, left))
    row.update(base=entry.base, k=entry.k)
    record["rows"].append(row)
    print(f"[suite] {entry.name}: "
          + ("ok" if "report" in row else row.get("error") or row.get("skipped")),
          f"({row.get('seconds', 0):.0f} s)", flush=True)
    _write(out, record)
  return record


def title(record: dict[str, Any]) -> str:
  """'Suite on DEVICE (DATE): host CPU, jax version, XLA_FLAGS' from the first report."""
  report = next((r["report"] for r in record["rows"] if "report" in r), None)
  if report is None:
    return f"Suite on {record['device']} ({record['date']})"
  host = report.get("host", {})
  return (f"Suite on {record['device']} ({record['date']}): host {host.get('cpu_model')} "
          f"({host.get('cpu_count')} cores), jax {report['jax']}, "
          f"XLA_FLAGS={host.get('xla_flags')!r}")


def _write(out: str, record: dict[str, Any]) -> None:
  with open(os.path.join(out, "suite.json"), "w") as f:
    json.dump(record, f, indent=2)
  with open(os.path.join(out, "suite.md"), "w") as f:
    f.write(title(record) + "\n\n" + markdown_table(record["rows"], record["matmul"]) + "\n")


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--device", required=True, choices=sorted(ENTRIES))
  p.add_argument("--out", required=True, help="folder for suite.json and suite.md")
  p.add_argument("--variant", default=None, help="e.g. 'tiny': a smoke test")
  p.add_argument("--only", default="", help="comma-separated entry names")
  p.add_argument("--budget_s", type=float, default=3600,
                 help="no entry starts after this many seconds")
  p.add_argument("--entry_timeout_s", type=float, default=900)
  p.add_argument("--matmul_n", type=int, default=None,
                 help=f"size of the measured matmul (default {MATMUL_N})")
  args = p.parse_args(argv)
  try:
    record = run_suite(args.device, args.out, variant=args.variant,
                       only=[n for n in args.only.split(",") if n],
                       budget_s=args.budget_s, entry_timeout_s=args.entry_timeout_s,
                       matmul_n=args.matmul_n)
  except ValueError as e:
    p.error(str(e))
  print(title(record) + "\n\n" + markdown_table(record["rows"], record["matmul"]))


if __name__ == "__main__":
  main()
