r"""PyTorch reference for the CPU throughput comparison: mmjax's causal `text_transformer`.

  python -m mmjax.bench.torch_gpt --vocab=50257 --max_len=1024 --width=768 --depth=12 \
      --heads=12 --mlp=3072 --batch=8 --seq=256 --steps=10 --warmup=3 --mode=both \
      --json=/tmp/torch_gpt.json

`--mode=bench` runs it side by side with mmjax's step in one run instead
(`bench.compare=("torch_eager", "torch_compile")`, mmjax/bench/torch_compare.py): it
starts this module with `--serve`, which warms the steps up and then runs blocks of steps
on request, one JSON line each way, while the mmjax process waits.

The same architecture and parameter count as mmjax (tests/bench/torch_checks.py
copies an mmjax init in and checks the logits and loss): learned token [V, D] and position
[max_len, D] embeddings, pre-LN blocks (LayerNorm eps 1e-6 with bias; biased q/k/v/out
projections; MLP D -> F -> D with tanh GELU), final LayerNorm, tied read-out, no dropout.
Loss: mean next-token cross-entropy over the B*(T-1) targets (mmjax's `clm` with all-ones
masks). Optimizer: AdamW (--lr, --b1, --b2, --eps; mmjax's defaults); optional
--weight_decay (not on biases and LayerNorms: mmjax's optim.no_decay) and --clip_norm
(global-norm clipping, as optim.clip_norm), which configs/bench/gpt2_124m.py sets.

A timed step is zero_grad, forward, loss, backward, AdamW step on one fixed random batch,
for `--mode` eager, torch.compile (inductor, forward and backward; AdamW stays eager) or
both. The first step (the compile, in compile mode) is reported apart; inductor caches
compiled code under /tmp/torchinductor_$USER, so set TORCHINDUCTOR_FORCE_DISABLE_CACHES=1
to time a cold compile. PyTorch is optional (the `bench` extra): only this module, which
nothing in mmjax imports, and its tests need it.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
  """Pre-LN block: x + attn(LN(x)), then x + mlp(LN(x)); mmjax's TransformerBlock."""

  def __init__(self, width: int, heads: int, mlp: int):
    super().__init__()
    self.heads = heads
    self.ln_attn, self.ln_mlp = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
    self.query, self.key, self.value, self.out = (nn.Linear(width, width) for _ in range(4))
    self.fc1, self.fc2 = nn.Linear(width, mlp), nn.Linear(mlp, width)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    b, t, d = x.shape
    h = self.ln_attn(x)
    # [B,T,D] -> [B,N,T,H], the layout scaled_dot_product_attention wants.
    q, k, v = (p(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
               for p in (self.query, self.key, self.value))
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
    return x + self.fc2(F.gelu(self.fc1(self.ln_mlp(x)), approximate="tanh"))


class GPT(nn.Module):
  """Token + position embeddings -> blocks -> final LN -> tied read-out logits [B,T,V]."""

  def __init__(self, vocab: int, max_len: int, width: int, depth: int, heads: int, mlp: int):
    super().__init__()
    self.token_embed = nn.Embedding(vocab, width)
    self.pos_embed = nn.Parameter(torch.empty(max_len, width))
    self.blocks = nn.ModuleList(Block(width, heads, mlp) for _ in range(depth))
    self.ln_final = nn.LayerNorm(width, eps=1e-6)
    # mmjax's initializers: normal(0.02) embeddings, Xavier-uniform kernels, zero biases.
    nn.init.normal_(self.token_embed.weight, std=0.02)
    nn.init.normal_(self.pos_embed, std=0.02)
    for m in self.modules():
      if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)

  def forward(self, tokens: torch.Tensor) -> torch.Tensor:
    x = self.token_embed(tokens) + self.pos_embed[:tokens.shape[1]]
    for block in self.blocks:
      x = block(x)
    return self.ln_final(x) @ self.token_embed.weight.T


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
  """Mean cross-entropy of logits[:, t] against tokens[:, t+1] over B*(T-1) targets."""
  return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                         tokens[:, 1:].reshape(-1))


@torch.no_grad()
def load_mmjax_params(model: GPT, params) -> None:
  """Copies an mmjax text_transformer params tree (scan_layers=False) into `model`.

  flax kernels are [in, out] and torch Linear weights [out, in]; the attention kernels are
  DenseGeneral's [D, N, H] (q/k/v, bias [N, H]) and [N, H, D] (out), flattened to [D, D].
  """
  t = lambda a: torch.from_numpy(np.asarray(a, np.float32).copy())
  d = model.ln_final.weight.shape[0]
  model.token_embed.weight.copy_(t(params["token_embed"]["embedding"]))
  model.pos_embed.copy_(t(params["pos_embed"]["embedding"]))
  enc = params["encoder"]
  for i, block in enumerate(model.blocks):
    p = enc[f"block_{i}"]
    for name in ("ln_attn", "ln_mlp"):
      getattr(block, name).weight.copy_(t(p[name]["scale"]))
      getattr(block, name).bias.copy_(t(p[name]["bias"]))
    for name in ("query", "key", "value"):
      getattr(block, name).weight.copy_(t(p["attn"][name]["kernel"]).reshape(d, d).T)
      getattr(block, name).bias.copy_(t(p["attn"][name]["bias"]).reshape(d))
    block.out.weight.copy_(t(p["attn"]["out"]["kernel"]).reshape(d, d).T)
    block.out.bias.copy_(t(p["attn"]["out"]["bias"]))
    for name in ("fc1", "fc2"):
      getattr(block, name).weight.copy_(t(p["mlp"][name]["kernel"]).T)
      getattr(block, name).bias.copy_(t(p["mlp"][name]["bias"]))
  model.ln_final.weight.copy_(t(enc["ln_final"]["scale"]))
  model.ln_final.bias.copy_(t(enc["ln_final"]["bias"]))


def model_flops(args, tokens: int) -> float:
  """mmjax's count (tests/bench/test_flops.py) for `tokens` = B*T (logits at every
  position): forward matmuls x3 for forward + backward; attention counts the full [T, T]
  scores (mmjax's own count is lower where its CPU attention skips the masked chunks:
  mmjax/models/attention.py)."""
  d, f, t = args.width, args.mlp, args.seq
  return 3.0 * tokens * (args.depth * (8 * d * d + 4 * d * f + 4 * t * d) + 2 * d * args.vocab)


def make_step(args, mode: str):
  """A train step of the reference model in `mode` ('eager' | 'compile') on one fixed
  random batch [args.batch, args.seq]: -> (step() -> loss, parameter count)."""
  torch.manual_seed(0)  # the initial weights; the batch has its own generator
  model = GPT(args.vocab, args.max_len, args.width, args.depth, args.heads, args.mlp)
  # Matrices and embeddings decay; 1-D biases and LayerNorm parameters do not.
  groups = [{"params": [p for p in model.parameters() if p.ndim > 1],
             "weight_decay": args.weight_decay},
            {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
  opt = torch.optim.AdamW(groups, lr=args.lr, betas=(args.b1, args.b2), eps=args.eps)
  tokens = torch.randint(0, args.vocab, (args.batch, args.seq),
                         generator=torch.Generator().manual_seed(0))
  forward = torch.compile(model) if mode == "compile" else model

  def step():
    opt.zero_grad(set_to_none=True)
    loss = next_token_loss(forward(tokens), tokens)
    loss.backward()
    if args.clip_norm > 0:
      nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)
    opt.step()
    return loss.item()  # syncs, and the loss shows that training moves

  return step, sum(p.numel() for p in model.parameters())


def warm_up(step, warmup: int) -> float:
  """Runs `warmup` steps; -> seconds of the first (in compile mode, mostly compiling)."""
  start = time.perf_counter()
  step()
  first = time.perf_counter() - start
  for _ in range(warmup - 1):
    step()
  return first


def time_each(step, steps: int) -> tuple[list[float], list[float]]:
  """Runs `steps` steps, each timed to completion: -> (seconds, losses), [steps] each."""
  times, losses = [], []
  for _ in range(steps):
    start = time.perf_counter()
    losses.append(step())
    times.append(time.perf_counter() - start)
  return times, losses


def bench(args, mode: str) -> dict:
  """Times `args.steps` train steps after `args.warmup` (compilation included) in `mode`."""
  step, params = make_step(args, mode)
  out = {"mode": mode, "params": params}
  try:
    out["first_step_s"] = warm_up(step, args.warmup)
    times, losses = time_each(step, args.steps)
  except Exception as e:  # noqa: BLE001 -- e.g. inductor without a C++ compiler: record it
    return out | {"error": f"{type(e).__name__}: {e}".strip()[:2000]}
  med = statistics.median(times)
  q = np.percentile(times, [10, 90])
  flops = model_flops(args, args.batch * args.seq)
  return out | {"median_s": med, "p10_s": float(q[0]), "p90_s": float(q[1]),
                "tokens_per_s": args.batch * args.seq / med, "examples_per_s": args.batch / med,
                "flops_per_step": flops, "tflops_per_s": flops / med / 1e12,
                "loss_first": losses[0], "loss_last": losses[-1]}


def serve(args, modes: tuple[str, ...], requests=sys.stdin, replies=sys.stdout) -> None:
  """The side-by-side protocol, one JSON object per line. First reply: {'torch',
  'threads', 'modes': {mode: {'params', 'first_step_s'} or {'error'}}} once every mode is
  built and warmed up. Then each request {'mode', 'steps', 'each'} runs `steps` steps of
  that mode and replies {'times': [steps] seconds} (each step timed to completion) or
  {'mean_s'} (back to back); EOF ends it. Nothing else is written to `replies`."""
  steps, ready = {}, {}
  for mode in modes:
    step, params = make_step(args, mode)
    try:
      ready[mode] = {"params": params, "first_step_s": warm_up(step, args.warmup)}
      steps[mode] = step
    except Exception as e:  # noqa: BLE001 -- reported to the caller, which drops the mode
      ready[mode] = {"error": f"{type(e).__name__}: {e}".strip()[:2000]}

  def reply(obj):
    replies.write(json.dumps(obj) + "\n")
    replies.flush()

  reply({"torch": torch.__version__, "threads": torch.get_num_threads(), "modes": ready})
  for line in requests:
    request = json.loads(line)
    step, n = steps[request["mode"]], int(request["steps"])
    if request.get("each"):
      reply({"times": time_each(step, n)[0]})
    else:
      start = time.perf_counter()
      for _ in range(n):
        step()
      reply({"mean_s": (time.perf_counter() - start) / n})


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  for name, default in (("vocab", 50257), ("max_len", 1024), ("width", 768), ("depth", 12),
                        ("heads", 12), ("mlp", 3072), ("batch", 8), ("seq", 256),
                        ("steps", 10), ("warmup", 3), ("threads", 0)):
    p.add_argument(f"--{name}", type=int, default=default)
  for name, default in (("lr", 1e-4), ("b1", 0.9), ("b2", 0.999), ("eps", 1e-8),
                        ("weight_decay", 0.0)):
    p.add_argument(f"--{name}", type=float, default=default)
  p.add_argument("--clip_norm", type=float, default=0.0, help="0: no clipping")
  p.add_argument("--mode", choices=("eager", "compile", "both"), default="both")
  p.add_argument("--json", default="")
  p.add_argument("--serve", action="store_true",
                 help="answer timing requests on stdin (mmjax --mode=bench runs this)")
  args = p.parse_args(argv)
  if args.seq > args.max_len or args.width % args.heads or args.warmup < 1 or args.steps < 1:
    p.error("need seq <= max_len, width divisible by heads, warmup >= 1 and steps >= 1")
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.threads > 0:
    torch.set_num_threads(args.threads)
  modes = ("eager", "compile") if args.mode == "both" else (args.mode,)
  if args.serve:
    # The replies get a private copy of stdout; fd 1 itself goes to stderr, so that no
    # library's print (inductor's, say) can corrupt the protocol.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(args, modes, replies=replies)
    return
  common = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "config": vars(args)}
  results = [common | bench(args, m) for m in modes]
  print(f"torch {common['torch']}, {common['threads']} threads, batch {args.batch} x seq "
        f"{args.seq}, {results[0]['params']:,} params")
  print(f"{'mode':8} {'first s':>8} {'median s':>9} {'p10 s':>7} {'p90 s':>7} "
        f"{'tokens/s':>9} {'TFLOP/s':>8}")
  for r in results:
    if "error" in r:
      print(f"{r['mode']:8} error: {r['error'].splitlines()[0][:200]}")
      continue
    print(f"{r['mode']:8} {r['first_step_s']:8.2f} {r['median_s']:9.4f} {r['p10_s']:7.4f} "
          f"{r['p90_s']:7.4f} {r['tokens_per_s']:9.1f} {r['tflops_per_s']:8.4f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
