r"""Throughput benchmark: ViT-B/16 (12 layers, width 768, 12 heads, MLP 3072, 16x16 patches
of 224x224 RGB images, 1,000 classes; Dosovitskiy et al. 2021), cross-entropy, AdamW.

Variants: cpu (default: batch 8, float32), gpu (batch 128, bfloat16, scanned layers),
tiny (28x28, patch 7, width 64, 2 layers).

Command (synthetic data; docs/benchmarks.md):
  python -m mmjax.main --config=configs/bench/vit_b16.py --workdir=/tmp/bench_vit \
      --mode=bench
"""
from mmjax.config import default_config
from configs.common import bench_variant, config_variant


def get_config(arg=None):
  variant = config_variant(arg, "configs/bench/vit_b16.py", ("cpu", "gpu", "tiny"))
  c = default_config()
  c.model = dict(name="vit", image_size=224, patch_size=16, channels=3, width=768,
                 depth=12, num_heads=12, mlp_dim=3072, num_classes=1000, pool="cls",
                 scan_layers=False, remat="none", dtype="float32")
  c.objective = dict(name="supervised")
  c.optim.update(dict(name="adamw", learning_rate=1e-3, weight_decay=0.1, warmup_steps=0))
  bench_variant(c, variant, cpu_batch=8, gpu_batch=128,
                tiny_model=dict(image_size=28, patch_size=7, channels=1, width=64, depth=2,
                                num_heads=4, mlp_dim=256, num_classes=10))
  return c
