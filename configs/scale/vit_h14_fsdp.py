r"""ViT-H/14 (632M parameters) trained with FSDP over 256 devices: the scale-out config.

Model (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", Table 1): 32 layers,
width 1280, 16 heads, MLP 5120, 14x14 patches of 224x224 images (256 patches + cls),
1,000 classes: 632,045,800 parameters. bfloat16 compute with float32 master weights,
layers scanned, remat 'dots_no_batch'.

Mesh for 256 devices: {'fsdp': 256}: the width 1280 = 5 x 256, so every weight matrix and
AdamW's moments are split 256 ways. Global batch 4,096 (the paper's), AdamW (b2 0.999,
wd 0.1), lr 1e-3 with 10k linear warmup then cosine, clip 1.0: the paper's ImageNet-21k
pretraining recipe; here on TFDS `imagenet2012` (manual download: `tfds build
imagenet2012` with the archives in ~/tensorflow_datasets/downloads/manual).

Plan (no data or TPU needed; recorded in docs/benchmarks.md):
  python -m mmjax.main --config=configs/scale/vit_h14_fsdp.py --workdir=/tmp/plan_vith \
      --mode=plan
compiles the train step for 256 fake CPU devices and checks it against 16 GiB of HBM per
device (TPU v5e); --config.plan.topology=v5e:16x16 compiles for the real topology with
jax[tpu] installed.

`:tiny` is the same recipe at digit size (28x28, patch 7, width 64, 2 layers) on the
embedded dataset, FSDP over all local devices:
  python -m mmjax.main --config=configs/scale/vit_h14_fsdp.py:tiny --workdir=/tmp/vith_tiny
"""
from mmjax.config import default_config
from configs.common import config_variant, shrink_to_local, use_embedded_digits


def get_config(arg=None):
  variant = config_variant(arg, "configs/scale/vit_h14_fsdp.py")
  c = default_config()
  c.model = dict(name="vit", image_size=224, patch_size=14, channels=3, width=1280,
                 depth=32, num_heads=16, mlp_dim=5120, num_classes=1000, pool="cls",
                 pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225),
                 scan_layers=True, remat="dots_no_batch", dtype="bfloat16")
  c.objective = dict(name="supervised", label_smoothing=0.0)
  c.optim.update(dict(name="adamw", learning_rate=1e-3, b1=0.9, b2=0.999,
                      weight_decay=0.1, clip_norm=1.0, schedule="cosine",
                      warmup_steps=10_000))
  c.train.update(dict(total_steps=93_000, batch_size=4096, log_every=100,
                      eval_every=5000, checkpoint_every=5000))
  c.mesh.shape = {"fsdp": 256}
  c.plan.update(dict(devices=256, hbm_gib=16.0))
  c.data.update(dict(
      name="imagenet2012", train_split="train", eval_split="validation",
      shuffle_buffer=250_000,
      preprocess_train=("to_float|inception_crop(224)|flip_lr|keep('image', 'label')"),
      preprocess_eval="to_float|resize_small(256)|center_crop(224)|keep('image', 'label')"))
  c.train.eval_batch_size = 1024
  c.evals.loss.max_batches = 0
  if variant == "tiny":
    use_embedded_digits(c)
    c.model = dict(name="vit", image_size=28, patch_size=7, channels=1, width=64, depth=2,
                   num_heads=4, mlp_dim=256, num_classes=10, pool="cls", scan_layers=True,
                   remat="dots_no_batch", dtype="float32")
    c.optim.update(dict(learning_rate=1e-3, warmup_steps=50))
    shrink_to_local(c)
  return c
