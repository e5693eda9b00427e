"""PyTorch side by side with mmjax's step in one `--mode=bench` run.

`bench.compare` entries 'torch_eager' and 'torch_compile' start the reference model
(mmjax/bench/torch_gpt.py, the same causal text_transformer) in a child process with
`--serve`. The child builds and warms up its steps once; then, in every bench round, the
parent asks it for a block of steps and waits, so PyTorch and XLA never share the cores
and each round's ratio compares neighbours in time. PyTorch lives in its own process
because importing it into one that has loaded TensorFlow aborts (their bundled libraries
clash), and the bench may read TFDS for its shapes or its pipeline comparison.

Everything is checked before anything compiles: PyTorch installed, a CPU run on one
process, and a config the reference implements exactly (`reference_args`).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from typing import Any

import ml_collections

from mmjax.errors import ConfigError

MODES = {"torch_eager": "eager", "torch_compile": "compile"}
# text_transformer fields the reference implements only at these values.
_REFERENCE_MODEL = dict(
    causal=True, lm_head=True, tie_embeddings=True, num_classes=0, projection_dim=0,
    norm_position="pre", layer_norm_eps=1e-6, activation="gelu_tanh", type_vocab_size=0,
    embed_norm=False, pooler=False, lm_transform=False, token_classes=0, lora_rank=0,
    adapter_dim=0, dropout=0.0, dtype="float32")


def torch_installed() -> bool:
  """Whether PyTorch can be imported (checked without importing it here)."""
  return importlib.util.find_spec("torch") is not None


def reference_args(config: ml_collections.ConfigDict, *, batch: int, seq: int,
                   platform: str, processes: int) -> list[str]:
  """Command-line arguments of mmjax.bench.torch_gpt for the same model, optimizer and
  batch [batch, seq] as `config`'s bench step; ConfigError naming every setting the
  reference cannot match, and the fix."""
  from mmjax import models  # pylint: disable=g-import-not-at-top
  if not torch_installed():
    raise ConfigError("bench.compare 'torch_eager'/'torch_compile' need PyTorch: "
                      "pip install -e '.[bench]' (or drop them from bench.compare).")
  problems = []
  if platform != "cpu" or processes != 1:
    problems.append(f"a CPU run on one process (this one: {platform}, {processes} "
                    "processes)")
  if config.model.get("name") != "text_transformer":
    problems.append(f"model.name='text_transformer' (got {config.model.get('name')!r})")
  else:
    # Every field, the ones the config leaves at the model's defaults too.
    m = models.config_with_defaults(config.model)
    problems += [f"model.{k}={v!r} (got {m[k]!r})" for k, v in _REFERENCE_MODEL.items()
                 if m[k] != v]
  o = config.optim
  for key, want, got in (("objective.name", "clm", config.objective.get("name")),
                         ("optim.name", "adamw", o.name),
                         ("optim.grad_accum_steps", 1, o.grad_accum_steps),
                         ("optim.ema_decay", 0.0, o.ema_decay),
                         ("adversarial.kind", "none", config.adversarial.kind)):
    if got != want:
      problems.append(f"{key}={want!r} (got {got!r})")
  if problems:
    raise ConfigError("bench.compare 'torch_eager'/'torch_compile' time PyTorch's copy of "
                      "a causal GPT (mmjax/bench/torch_gpt.py), which needs "
                      + "; ".join(problems) + ". Use configs/bench/gpt2_124m.py or drop "
                      "them from bench.compare.")
  return [f"--vocab={m['vocab_size']}", f"--max_len={m['max_len']}", f"--width={m['width']}",
          f"--depth={m['depth']}", f"--heads={m['num_heads']}", f"--mlp={m['mlp_dim']}",
          f"--batch={batch}", f"--seq={seq}", f"--lr={float(o.learning_rate)}",
          f"--b1={o.b1}", f"--b2={o.b2}", f"--eps={o.eps}",
          f"--weight_decay={o.weight_decay}", f"--clip_norm={o.clip_norm}"]


def server_command(args: list[str], modes: list[str], warmup: int) -> list[str]:
  """The child's command line (a test replaces it with a stand-in that needs no torch)."""
  mode = "both" if len(modes) == 2 else modes[0]
  return [sys.executable, "-m", "mmjax.bench.torch_gpt", "--serve", f"--mode={mode}",
          f"--warmup={warmup}", *args]


class TorchServer:
  """The child process: construction waits until every mode is built and warm (`info`
  holds its first reply); `latencies` and `block` run steps there while this process
  waits. Use as a context manager."""

  def __init__(self, command: list[str]):
    self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1)
    self.info = self._receive()

  def _receive(self) -> dict[str, Any]:
    line = self._proc.stdout.readline()
    if not line:
      code = self._proc.wait(timeout=60)   # Its stdout closed: it is exiting.
      raise RuntimeError(f"The PyTorch reference process exited (status {code}) without "
                         "answering; its error is printed above.")
    return json.loads(line)

  def _ask(self, **request) -> dict[str, Any]:
    self._proc.stdin.write(json.dumps(request) + "\n")
    self._proc.stdin.flush()
    return self._receive()

  def latencies(self, mode: str, steps: int) -> list[float]:
    """[steps] seconds, each step timed to completion."""
    return self._ask(mode=mode, steps=steps, each=True)["times"]

  def block(self, mode: str, steps: int) -> float:
    """Mean seconds per step of `steps` steps run back to back."""
    return self._ask(mode=mode, steps=steps, each=False)["mean_s"]

  def close(self) -> None:
    if self._proc.poll() is None:
      self._proc.stdin.close()
      try:
        self._proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self._proc.kill()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class RemoteStep:
  """One mode of the child as a bench contender: `latencies(n)`, `block(n)`."""

  def __init__(self, server: TorchServer, mode: str):
    self._server, self._mode = server, mode

  def latencies(self, count: int) -> list[float]:
    return self._server.latencies(self._mode, count)

  def block(self, count: int) -> float:
    return self._server.block(self._mode, count)


__all__ = ["MODES", "reference_args", "server_command", "TorchServer", "RemoteStep"]
