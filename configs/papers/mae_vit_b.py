r"""MAE: masked autoencoders are scalable vision learners (He et al. 2022), ViT-B/16
pretraining on ImageNet-1k.

Reproduces (`:full`, TFDS `imagenet2012`): a ViT-B/16 encoder (12 layers, width 768, 12
heads, cls token, no classifier) that sees 25% of the 196 patches (mask ratio 0.75), and
a decoder of 8 blocks, width 512, 16 heads, predicting the hidden patches' normalised
pixels (per-patch mean/std; the loss on hidden patches only). AdamW with base lr 1.5e-4 *
4096/256 = 2.4e-3, betas (0.9, 0.95), weight decay 0.05, batch 4096, 1600 epochs (312
steps each; `--config.train.total_steps=249600` for the 800-epoch schedule), 40 warmup
epochs, cosine. Augmentation: random-resized crop (20-100% of the area) + flip.
Published (ViT-B, 1600 epochs): fine-tuned 83.6% top-1, linear probe 68.0%.
Expected time: about 55 GFLOPs per training image (the encoder runs on 50 of 197
tokens), 2.0e9 images: roughly 80 h on one H100 at 40% MFU, 10 h on 8 (an estimate from
FLOPs, not measured here).

Deviations: learned position tables (MAE uses fixed 2-D sin-cos ones; ours are kept out
of weight decay), bilinear resizing; the published numbers come from separate fine-tuning
(100 epochs, with mixup/CutMix/RandAugment mmjax lacks) and linear-probe (90 epochs,
LARS, BatchNorm) runs that this config does not do; as training goes it reports a quick
logistic-regression probe on the frozen cls features (`evals.probe`: 10,000 train images,
10,000 validation images), a lower bound on the published protocol.
`imagenet2012` needs a MANUAL download: ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar from image-net.org in DIR, then `tfds build imagenet2012
--manual_dir=DIR`; unprepared, the run stops at once with a DataError naming it.

`:tiny`: the same objective with a 2-layer ViT (patch 4, width 64) and a 1-block decoder
(width 64) on the embedded digits, lr 3e-3, 1,500 steps of batch 64; the measure is the
eval MAE loss (normalised-pixel MSE on hidden patches), against 0.355 for predicting each
patch's mean (below 1.0 because blank patches have nothing to predict), and the linear
probe on 2,000 train / 500 test digits against the same probe on the initial encoder.
Expected (:tiny): docs/reproductions.md.

Commands:
  python -m mmjax.main --config=configs/papers/mae_vit_b.py:tiny --workdir=/tmp/mae_vit_b
  python -m mmjax.main --config=configs/papers/mae_vit_b.py --workdir=/tmp/mae_in1k
"""
from mmjax.config import default_config
from configs.common import config_variant, use_embedded_digits, use_imagenet

TRAIN_IMAGES = 1_281_167


def get_config(arg=None):
  variant = config_variant(arg, "configs/papers/mae_vit_b.py")
  c = default_config()
  use_imagenet(c, area_min=0.2)
  c.model = dict(name="vit", image_size=224, patch_size=16, channels=3, width=768,
                 depth=12, num_heads=12, mlp_dim=3072, num_classes=0, pool="cls",
                 activation="gelu", pixel_mean=(0.485, 0.456, 0.406),
                 pixel_std=(0.229, 0.224, 0.225), decoder_width=512, decoder_depth=8,
                 decoder_heads=16)
  c.objective = dict(name="mae", mask_ratio=0.75, norm_pix_loss=True)
  batch, epochs = 4096, 1600
  steps_per_epoch = TRAIN_IMAGES // batch
  c.optim.update(dict(name="adamw", learning_rate=1.5e-4 * batch / 256, b1=0.9, b2=0.95,
                      schedule="cosine", warmup_steps=40 * steps_per_epoch,
                      weight_decay=0.05, no_decay=("bias", "norm", "scale", "pos_embed")))
  c.train.eval_batch_size = 1024
  c.evals.loss.max_batches = 10
  # A quick linear probe on the frozen cls features as training goes (MAE's own probe is
  # a separate 90-epoch LARS run with BatchNorm; this one is logistic regression on 10,000
  # training images, tested on 10,000 validation images).
  c.evals.probe = dict(type="probe", modality="image", train_examples=10_000,
                       test_examples=10_000, steps=1000, random_baseline=False)
  if variant == "tiny":
    use_embedded_digits(c, augment="random_crop(28, pad=2)")
    c.model.update(dict(image_size=28, patch_size=4, channels=1, width=64, depth=2,
                        num_heads=4, mlp_dim=128, pixel_mean=(0.5,), pixel_std=(0.5,),
                        decoder_width=64, decoder_depth=1, decoder_heads=4))
    c.optim.update(dict(learning_rate=3e-3, warmup_steps=30))
    c.train.eval_batch_size = 250
    c.evals.loss.max_batches = 0
    c.evals.probe.update(dict(train_examples=2000, test_examples=500, steps=500,
                              random_baseline=True))
    batch, epochs, steps_per_epoch = 64, 25, 60
  c.train.update(dict(total_steps=steps_per_epoch * epochs, batch_size=batch,
                      log_every=steps_per_epoch, eval_every=steps_per_epoch * epochs // 2,
                      checkpoint_every=steps_per_epoch * 5))
  return c
