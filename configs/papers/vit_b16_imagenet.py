r"""ViT-B/16 trained from scratch on ImageNet-1k with the DeiT recipe (Touvron et al. 2021,
"Training data-efficient image transformers & distillation through attention"; the model
is Dosovitskiy et al. 2021's ViT-B/16).

Reproduces (`:full`, TFDS `imagenet2012`, 1,281,167 train / 50,000 validation images):
ViT-B/16 (12 layers, width 768, 12 heads, MLP 3072, exact GELU, cls-token pooling, a
1,000-class head; 86,567,656 parameters) on 224x224 crops normalised with the ImageNet
mean/std. DeiT's optimisation: AdamW at 5e-4 * 1024/512 = 1e-3, weight decay 0.05 (not on
biases, norms, the position table and the cls token), 300 epochs of batch 1024 (1,251
steps each), 5 warmup epochs, cosine to 1e-5, label smoothing 0.1, no dropout.
Train: random-resized crop (8-100% of the area, aspect 3/4-4/3) + horizontal flip;
eval: shorter side to 256, centre crop 224. Published: 81.8% top-1 (DeiT-B, 224 px,
Table 7 of the paper, without distillation). Expected time: DeiT reports 53 h on one
8-GPU (V100) node; by FLOPs (about 105 GFLOPs per training image, 3.8e8 images) about
28 h on one H100 at 40% MFU (an estimate, not measured here).

Deviations (mmjax lacks these augmentations and regularisers, so expect a few points
below 81.8 and more overfitting; DeiT's ablation, Table 8, loses up to several points
without them): no RandAugment (9, 0.5), no mixup (0.8) or CutMix (1.0), no random erasing
(0.25), no repeated augmentation, no stochastic depth (0.1); bilinear rather than bicubic
resizing; a learned position table (as DeiT), warmup from lr/steps rather than 1e-6.

Data: `imagenet2012` needs a MANUAL download: get ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar from image-net.org (registration) into a folder DIR, then
`tfds build imagenet2012 --manual_dir=DIR --data_dir=~/tensorflow_datasets` (about 150 GB
of TFRecords). Unprepared, the run stops at once with a DataError naming the dataset.

`:tiny` trains a 2-layer ViT (patch 4, width 64) on the embedded digits with the same
objective (label smoothing 0.1), AdamW/cosine recipe and random-resized crops (50-100%,
no flip: digits are not mirror-symmetric), 1,000 steps of batch 64.
Expected (:tiny): docs/reproductions.md.

Commands:
  python -m mmjax.main --config=configs/papers/vit_b16_imagenet.py:tiny --workdir=/tmp/vit_b16
  python -m mmjax.main --config=configs/papers/vit_b16_imagenet.py --workdir=/tmp/vit_b16_in1k
"""
from mmjax.config import default_config
from configs.common import config_variant, use_embedded_digits, use_imagenet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_IMAGES = 1_281_167


def get_config(arg=None):
  variant = config_variant(arg, "configs/papers/vit_b16_imagenet.py")
  c = default_config()
  use_imagenet(c, area_min=0.08)
  c.model = dict(name="vit", image_size=224, patch_size=16, channels=3, width=768,
                 depth=12, num_heads=12, mlp_dim=3072, num_classes=1000, pool="cls",
                 dropout=0.0, activation="gelu", pixel_mean=IMAGENET_MEAN,
                 pixel_std=IMAGENET_STD)
  c.objective = dict(name="supervised", label_smoothing=0.1)
  batch, epochs = 1024, 300
  steps_per_epoch = TRAIN_IMAGES // batch
  c.optim.update(dict(name="adamw", learning_rate=5e-4 * batch / 512, schedule="cosine",
                      warmup_steps=5 * steps_per_epoch, end_lr_factor=1e-5 / 1e-3,
                      weight_decay=0.05,
                      no_decay=("bias", "norm", "scale", "pos_embed", "cls_token")))
  c.train.eval_batch_size = 500
  if variant == "tiny":
    use_embedded_digits(c, augment="inception_crop(28, area_min=0.5)")
    c.model.update(dict(image_size=28, patch_size=4, channels=1, width=64, depth=2,
                        num_heads=4, mlp_dim=128, num_classes=10, pixel_mean=(0.5,),
                        pixel_std=(0.5,)))
    c.optim.update(dict(learning_rate=3e-3, warmup_steps=20, end_lr_factor=0.01))
    c.train.eval_batch_size = 250
    batch, epochs, steps_per_epoch = 64, 20, 50
  c.train.update(dict(total_steps=steps_per_epoch * epochs, batch_size=batch,
                      log_every=steps_per_epoch, eval_every=steps_per_epoch * epochs // 2,
                      checkpoint_every=steps_per_epoch * 5))
  return c
