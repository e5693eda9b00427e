r"""Throughput benchmark: a GPT-2-124M-shaped decoder (12 layers, width 768, 12 heads,
MLP 3072, vocabulary 50,257, tied embeddings; Radford et al. 2019), causal LM, AdamW.

Variants (`--config=configs/bench/gpt2_124m.py:VARIANT`):
  cpu (default)  batch 4 x 256 tokens, float32: a CPU-sized step (the position table is
                 256 long, so 123.85M parameters instead of 124.44M at 1,024)
  gpu            batch 16 x 1,024 tokens, bfloat16 compute with float32 master weights,
                 layers scanned: one H100/H200 (nanoGPT's micro-batch is 12-16 x 1,024)
  tiny           width 64, 2 layers, 32 tokens: a smoke test

Command (synthetic data, no TensorFlow needed; results in docs/benchmarks.md):
  python -m mmjax.main --config=configs/bench/gpt2_124m.py --workdir=/tmp/bench_gpt2 \
      --mode=bench '--config.bench.compare=("bare",)'
Side by side with the same model in PyTorch (pip install -e '.[bench]'), in one run:
  ... '--config.bench.compare=("bare", "torch_eager", "torch_compile")'
"""
from mmjax.config import default_config
from configs.common import bench_variant, config_variant


def get_config(arg=None):
  variant = config_variant(arg, "configs/bench/gpt2_124m.py", ("cpu", "gpu", "tiny"))
  c = default_config()
  c.model = dict(name="text_transformer", vocab_size=50_257, max_len=256, width=768,
                 depth=12, num_heads=12, mlp_dim=3072, causal=True, lm_head=True,
                 tie_embeddings=True, scan_layers=False, remat="none", dtype="float32")
  c.objective = dict(name="clm")
  c.optim.update(dict(name="adamw", learning_rate=6e-4, b2=0.95, weight_decay=0.1,
                      clip_norm=1.0, warmup_steps=0))
  bench_variant(c, variant, cpu_batch=4, gpu_batch=16, gpu_model=dict(max_len=1024),
                tiny_model=dict(vocab_size=260, max_len=32, width=64, depth=2, num_heads=4,
                                mlp_dim=256))
  return c
