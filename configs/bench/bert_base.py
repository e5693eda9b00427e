r"""Throughput benchmark: BERT-base (12 layers, width 768, 12 heads, MLP 3072, vocabulary
30,522, tied MLM head; Devlin et al. 2019): 108.9M parameters at 512 positions (BERT's
110M adds token-type embeddings, the pooler and the MLM head's transform), masked
language modelling (15%, 80/10/10), AdamW.

Variants: cpu (default: batch 8 x 128 tokens, float32), gpu (batch 32 x 512, bfloat16,
scanned layers), tiny (width 64, 2 layers, 32 tokens).

Command (synthetic data; docs/benchmarks.md):
  python -m mmjax.main --config=configs/bench/bert_base.py --workdir=/tmp/bench_bert \
      --mode=bench
"""
from mmjax.config import default_config
from configs.common import bench_variant, config_variant


def get_config(arg=None):
  variant = config_variant(arg, "configs/bench/bert_base.py", ("cpu", "gpu", "tiny"))
  c = default_config()
  c.model = dict(name="text_transformer", vocab_size=30_522, max_len=128, width=768,
                 depth=12, num_heads=12, mlp_dim=3072, causal=False, lm_head=True,
                 tie_embeddings=True, scan_layers=False, remat="none", dtype="float32")
  c.objective = dict(name="mlm")
  c.optim.update(dict(name="adamw", learning_rate=1e-4, weight_decay=0.01, warmup_steps=0))
  bench_variant(c, variant, cpu_batch=8, gpu_batch=32, gpu_model=dict(max_len=512),
                tiny_model=dict(vocab_size=260, max_len=32, width=64, depth=2, num_heads=4,
                                mlp_dim=256))
  return c
