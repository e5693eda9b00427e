"""bench.compare 'torch_eager'/'torch_compile': the parent's side of the side-by-side run
(a stand-in child that answers the protocol with fixed times, so no PyTorch is needed),
and the settings refused before anything compiles. The real child is tested in
tests/bench/torch_checks.py where PyTorch is installed."""
import json
import os
import statistics
import sys

import pytest

from mmjax.bench import throughput, torch_compare
from mmjax.config import load_config_file
from mmjax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Answers like mmjax.bench.torch_gpt --serve: eager steps take 20 ms back to back and
# 30 ms one by one; torch.compile failed to build. It records the requests it got.
STAND_IN = r"""
import json, sys
log = open(sys.argv[1], "w")
print(json.dumps({"torch": "9.9", "threads": 2, "modes": {
    "eager": {"params": 1, "first_step_s": 0.5},
    "compile": {"error": "InductorError: no C++ compiler"}}}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    log.write(line); log.flush()
    reply = ({"times": [0.03] * request["steps"]} if request["each"] else {"mean_s": 0.02})
    print(json.dumps(reply), flush=True)
"""


def tiny_gpt():
  c = load_config_file(os.path.join(REPO, "configs/bench/gpt2_124m.py"), "tiny")
  c.train.batch_size = 8
  c.bench.update(dict(steps=2, warmup=1, rounds=3))
  return c


def test_side_by_side_with_the_child(tmp_path, monkeypatch):
  requests = tmp_path / "requests.jsonl"
  commands = []

  def stand_in(args, modes, warmup):
    commands.append((args, modes, warmup))
    return [sys.executable, "-c", STAND_IN, str(requests)]

  monkeypatch.setattr(torch_compare, "torch_installed", lambda: True)
  monkeypatch.setattr(torch_compare, "server_command", stand_in)
  c = tiny_gpt()
  c.bench.compare = ("torch_eager", "torch_compile")
  r = throughput.run_bench(c, str(tmp_path))

  (args, modes, warmup), = commands
  assert modes == ["eager", "compile"] and warmup == 1
  assert {"--vocab=260", "--max_len=32", "--width=64", "--depth=2", "--heads=4",
          "--mlp=256", "--batch=8", "--seq=32", "--weight_decay=0.1",
          "--clip_norm=1.0", "--b2=0.95"} <= set(args)
  # Warm-up, latencies, then one block per round, in that order.
  asked = [json.loads(line) for line in requests.read_text().splitlines()]
  assert asked == ([{"mode": "eager", "steps": 1, "each": False},
                    {"mode": "eager", "steps": 2, "each": True}]
                   + [{"mode": "eager", "steps": 2, "each": False}] * 3)
  assert r["torch"] == {"version": "9.9", "threads": 2}
  assert r["torch_eager"]["median_s"] == pytest.approx(0.03)
  assert r["torch_eager"]["pipelined_mean_s"] == pytest.approx(0.02)
  assert r["torch_eager"]["first_step_s"] == 0.5
  assert r["round_means_s"]["torch_eager"] == [0.02] * 3
  assert r["speedup_vs_torch_eager"] == pytest.approx(statistics.median(
      0.02 / m for m in r["round_means_s"]["mmjax"]))
  # The failed mode is reported, not timed.
  assert "no C++ compiler" in r["torch_compile"]["error"]
  assert "speedup_vs_torch_compile" not in r
  text = throughput.format_report(r)
  assert "PyTorch 9.9 eager (2 threads) 20.0 ms: mmjax" in text
  assert "PyTorch torch.compile: failed (InductorError" in text


@pytest.mark.parametrize("change, cause", [
    (lambda c: c.model.update(dict(causal=False)), "model.causal=True (got False)"),
    (lambda c: c.model.update(dict(dtype="bfloat16")), "model.dtype='float32'"),
    (lambda c: c.objective.update(dict(name="mlm")), "objective.name='clm' (got 'mlm')"),
    (lambda c: c.optim.update(dict(ema_decay=0.999)), "optim.ema_decay=0.0"),
])
def test_settings_the_reference_cannot_match_are_refused(tmp_path, monkeypatch, change,
                                                         cause):
  monkeypatch.setattr(torch_compare, "torch_installed", lambda: True)
  c = tiny_gpt()
  c.bench.compare = ("torch_eager",)
  change(c)
  with pytest.raises(ConfigError, match=r"PyTorch's copy of a causal GPT .*"
                     + cause.replace("(", r"\(").replace(")", r"\)")):
    throughput.run_bench(c, str(tmp_path))
  assert not (tmp_path / "bench.json").exists()


def test_other_models_and_missing_torch_are_refused(tmp_path, monkeypatch):
  c = load_config_file(os.path.join(REPO, "configs/bench/vit_b16.py"), "tiny")
  c.bench.compare = ("torch_compile",)
  monkeypatch.setattr(torch_compare, "torch_installed", lambda: True)
  with pytest.raises(ConfigError, match=r"model.name='text_transformer' \(got 'vit'\)"):
    throughput.run_bench(c, str(tmp_path))
  monkeypatch.setattr(torch_compare, "torch_installed", lambda: False)
  c = tiny_gpt()
  c.bench.compare = ("torch_eager",)
  with pytest.raises(ConfigError, match=r"need PyTorch: pip install -e '.\[bench\]'"):
    throughput.run_bench(c, str(tmp_path))


def test_reference_args_fill_in_the_model_defaults(monkeypatch):
  """A config that leaves model fields at their defaults gets the defaults' values."""
  from mmjax import models
  monkeypatch.setattr(torch_compare, "torch_installed", lambda: True)
  c = tiny_gpt()
  del c.model["mlp_dim"], c.model["num_heads"]
  defaults = models.config_with_defaults({"name": "text_transformer"})
  args = torch_compare.reference_args(c, batch=8, seq=32, platform="cpu", processes=1)
  assert f"--mlp={defaults['mlp_dim']}" in args and f"--heads={defaults['num_heads']}" in args
