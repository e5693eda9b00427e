r"""Export a digits checkpoint, check the artifacts against it, and load-test the server.

  python -m mmjax.main --config=configs/digits_cnn.py --workdir=/tmp/mmjax_cnn
  python benchmarks/serve_digits.py --config=configs/digits_cnn.py --workdir=/tmp/mmjax_cnn \
      --clients=16 --requests=100 --out=/tmp/serve_digits.json
  (any classifier config: e.g. configs/finetune/minilm_lora_classification.py:tiny, whose
  requests are caption token ids + mask)

1. `--mode=export` of the newest checkpoint (timed; file sizes from the manifest).
2. Reload match: logits of the jax.export artifact and of the SavedModel against the
   in-process eval path (device ops, embed, encode) on the first --match_examples test
   digits, max |difference|, and their accuracies.
3. Load test: `python -m mmjax.predict --artifact=... --serve=PORT` in a subprocess, once
   per setting (batch 1: --max_batch=1; dynamic: --max_batch/--max_wait_ms); --clients
   threads each POST --requests single-digit requests back to back. Requests/s, latency
   p50/p99 and how many were not answered with 200 (dropped), plus the server's model
   calls from /health.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmjax.config import load_config_file  # noqa: E402


def export_and_match(config, workdir: str, n: int) -> dict:
  import jax
  import tensorflow as tf
  from mmjax.data import device_ops
  from mmjax.evals import batched
  from mmjax.interop import artifact, export
  from mmjax.train import loop
  start = time.perf_counter()
  manifest = export.export_checkpoint(config, workdir)
  export_s = time.perf_counter() - start
  directory = os.path.join(os.path.abspath(workdir), "export")
  # The host pipeline's examples (what the export takes): device ops left to the model.
  host_only = config.copy_and_resolve_references()
  host_only.data.device_preprocess_eval = None
  examples = batched.eval_examples(host_only.data, n, 500)
  labels = examples.pop("label")
  exp = loop.build_experiment(config, workdir, "eval")
  state, _, _ = exp.checkpointer.restore_latest(exp.abstract_state)
  exp.close()
  params = state.ema_params if state.ema_params is not None else state.params
  variables = batched.model_variables(params, state.model_state)
  # The in-process eval path, as evaluators run it: device ops, then embed and encode.
  transform = device_ops.eval_transform(config.data)
  model_logits = batched.ModelLogits(exp.model)
  inputs = model_logits.inputs(variables, transform(examples) if transform else examples, 500)
  want = model_logits.outputs(variables, inputs, 500)["logits"]
  got_jax = artifact.load_artifact(directory)(examples)["logits"]
  serve = tf.saved_model.load(os.path.join(directory, export.SAVED_MODEL)
                              ).signatures["serving_default"]
  got_tf = serve(**{k: tf.constant(v) for k, v in examples.items()})["logits"].numpy()
  accuracy = lambda logits: float((np.argmax(logits, -1) == labels).mean())
  files = manifest["files"]
  return {
      "export_s": round(export_s, 1), "examples": int(len(labels)),
      "jax_export_bytes": files[export.ARTIFACT]["bytes"],
      "saved_model_bytes": sum(v["bytes"] for k, v in files.items()
                               if k.startswith(export.SAVED_MODEL)),
      "max_abs_diff_jax_export": float(np.abs(got_jax - want).max()),
      "max_abs_diff_saved_model": float(np.abs(got_tf - want).max()),
      "accuracy_in_process": accuracy(want), "accuracy_jax_export": accuracy(got_jax),
      "accuracy_saved_model": accuracy(got_tf), "jax": jax.__version__,
  }, directory, examples


def _post(url: str, body: bytes) -> tuple[int | str, float]:
  start = time.perf_counter()
  request = urllib.request.Request(url + "/predict", data=body, method="POST")
  try:
    with urllib.request.urlopen(request, timeout=60) as r:
      r.read()
      status = r.status
  except Exception as e:   # pylint: disable=broad-except
    status = f"{type(e).__name__}: {e}"
  return status, time.perf_counter() - start


def load_test(directory: str, examples: dict, *, clients: int, requests: int,
              max_batch: int, max_wait_ms: float, port: int) -> dict:
  server = subprocess.Popen(
      [sys.executable, "-m", "mmjax.predict", f"--artifact={directory}", f"--serve={port}",
       f"--max_batch={max_batch}", f"--max_wait_ms={max_wait_ms}"],
      stderr=subprocess.PIPE, text=True)
  try:
    for line in server.stderr:   # the line says it is serving once warmed up
      if line.startswith("Serving"):
        break
    url = f"http://127.0.0.1:{port}"
    bodies = [json.dumps({"instances": [{k: v[i].tolist() for k, v in examples.items()}],
                          "top_k": 1}).encode() for i in range(64)]

    def client(i):
      return [_post(url, bodies[(i + j) % len(bodies)]) for j in range(requests)]

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
      results = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - start
    with urllib.request.urlopen(url + "/health") as r:
      health = json.load(r)
  finally:
    server.terminate()
    server.wait()
  latencies = np.array([t for _, t in results]) * 1000
  ok = sum(status == 200 for status, _ in results)
  return {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "clients": clients,
          "requests": len(results), "dropped": len(results) - ok,
          "errors": sorted({str(s) for s, _ in results if s != 200})[:3],
          "requests_per_s": round(ok / wall, 1),
          "p50_ms": round(float(np.percentile(latencies, 50)), 2),
          "p99_ms": round(float(np.percentile(latencies, 99)), 2),
          "model_calls": health["batches_run"],
          "mean_batch": round(health["examples_run"] / max(health["batches_run"], 1), 2)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/digits_cnn.py")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--clients", type=int, default=16)
  parser.add_argument("--requests", type=int, default=100, help="per client")
  parser.add_argument("--max_batch", type=int, default=32)
  parser.add_argument("--max_wait_ms", type=float, default=2.0)
  parser.add_argument("--match_examples", type=int, default=1000)
  parser.add_argument("--port", type=int, default=18517)
  parser.add_argument("--data_dir", default="", help="TFDS data_dir of the config's data")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  path, _, variant = args.config.partition(":")
  config = load_config_file(path, variant or None)
  if args.data_dir:
    config.data.data_dir = args.data_dir
  match, directory, examples = export_and_match(config, args.workdir, args.match_examples)
  print(json.dumps(match), flush=True)
  runs = []
  for max_batch, wait in ((1, 0.0), (args.max_batch, args.max_wait_ms)):
    runs.append(load_test(directory, examples, clients=args.clients, requests=args.requests,
                          max_batch=max_batch, max_wait_ms=wait, port=args.port))
    print(json.dumps(runs[-1]), flush=True)
  result = {"match": match, "load": runs, "load_average": os.getloadavg()}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
