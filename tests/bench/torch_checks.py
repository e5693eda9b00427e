"""The PyTorch reference (mmjax/bench/torch_gpt.py) is mmjax's causal text_transformer: the
same parameter count, and with mmjax's weights copied in, the same logits and clm loss;
its --serve protocol answers as mmjax/bench/torch_compare.py expects.
Run by tests/bench/test_torch_reference.py in a process of its own: importing PyTorch
into a process that has loaded TensorFlow aborts (their bundled libraries clash)."""
import io
import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mmjax import models  # noqa: E402
from mmjax.bench import torch_gpt  # noqa: E402
from mmjax.objectives import make_objective  # noqa: E402

V, MAX_LEN, D, DEPTH, N, F = 64, 16, 32, 2, 4, 64
T = 12  # shorter than max_len: the position table is sliced, as in mmjax


def _mmjax_model():
  return models.build_model(dict(name="text_transformer", vocab_size=V, max_len=MAX_LEN,
                                 width=D, depth=DEPTH, num_heads=N, mlp_dim=F, causal=True))


def _torch_count(model):
  return sum(p.numel() for p in model.parameters())


def test_parameter_count_matches_mmjax():
  abstract = models.abstract_variables(_mmjax_model(), {"text": np.zeros((1, T), np.int32)})
  assert _torch_count(torch_gpt.GPT(V, MAX_LEN, D, DEPTH, N, F)) == models.param_count(
      abstract["params"])
  # GPT-2 small's count (mmjax/models/text.py), built on the meta device: no memory.
  with torch.device("meta"):
    gpt2 = torch_gpt.GPT(50257, 1024, 768, 12, 12, 3072)
  assert _torch_count(gpt2) == 124_439_808


def test_same_weights_give_same_logits_and_loss():
  model = _mmjax_model()
  tokens = np.random.default_rng(0).integers(0, V, (3, T)).astype(np.int32)
  # An explicit all-ones mask: without one, clm treats token 0 as padding.
  batch = {"text": tokens, "text_mask": np.ones_like(tokens)}
  params = models.init_variables(model, batch, jax.random.key(0))["params"]
  # Random values everywhere (biases and LayerNorms start at 0 and 1), so that a wrong
  # mapping of any tensor would change the output. numpy noise: no per-shape compiles.
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(
      lambda x: x + 0.1 * rng.standard_normal(x.shape).astype(np.float32), params)
  loss_fn = make_objective(dict(name="clm"), model)

  @jax.jit
  def logits_and_loss(params, batch):
    logits = model.apply({"params": params}, batch)["lm_logits"]
    loss, _ = loss_fn(params, batch, jax.random.key(2), model_state={}, train=False)
    return logits, loss

  logits, loss = logits_and_loss(params, batch)

  reference = torch_gpt.GPT(V, MAX_LEN, D, DEPTH, N, F)
  torch_gpt.load_mmjax_params(reference, params)
  ids = torch.from_numpy(tokens.astype(np.int64))
  with torch.no_grad():
    torch_logits = reference(ids)
    torch_loss = torch_gpt.next_token_loss(torch_logits, ids)
  # Identical up to float32 rounding (~1e-6 here). Tight on purpose: exact instead of tanh
  # GELU, or LayerNorm eps 1e-5 instead of 1e-6, moves the logits by ~5e-4 but the loss by
  # only ~5e-5, which a 1e-4 tolerance on the loss alone would let through.
  np.testing.assert_allclose(torch_logits.numpy(), np.asarray(logits), atol=1e-5, rtol=1e-5)
  assert float(torch_loss) == pytest.approx(float(loss), abs=1e-5)


def test_serve_answers_the_protocol():
  args = torch_gpt.parse_args([f"--vocab={V}", f"--max_len={MAX_LEN}", f"--width={D}",
                               f"--depth={DEPTH}", f"--heads={N}", f"--mlp={F}",
                               "--batch=2", f"--seq={T}", "--warmup=1"])
  requests = io.StringIO('{"mode": "eager", "steps": 2, "each": true}\n'
                         '{"mode": "eager", "steps": 3, "each": false}\n')
  replies = io.StringIO()
  torch_gpt.serve(args, ("eager",), requests=requests, replies=replies)
  ready, latencies, block = (json.loads(line) for line in replies.getvalue().splitlines())
  assert ready["torch"] == torch.__version__ and ready["threads"] >= 1
  assert ready["modes"]["eager"]["params"] == _torch_count(
      torch_gpt.GPT(V, MAX_LEN, D, DEPTH, N, F))
  assert ready["modes"]["eager"]["first_step_s"] > 0
  assert len(latencies["times"]) == 2 and min(latencies["times"]) > 0
  assert block["mean_s"] > 0
