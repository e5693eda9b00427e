r"""Self-supervised + adversarial on images: MAE whose attack maximises the MAE loss
(L = L_ssl(x) + lam * L_ssl(x + delta), delta = argmax L_mae; in the spirit of RoCL / ACL,
which do this for contrastive losses), with a supervised head trained alongside.

Reproduces: no published number; it is the mmjax recipe at CIFAR-10 scale. `:full`
(TFDS `cifar10`): a ViT-Tiny-shaped encoder (width 192, depth 12, 3 heads, patch 4) with
an MAE decoder (mask 0.75, normalised pixels) plus a cross-entropy term on the pooled
features; the attack is PGD-3 in l-inf eps 8/255 maximising the MAE term only
(`attack_loss='mae'`), and its delta is applied to both terms. AdamW 1.5e-4 * 256/256
with weight decay 0.05, 40 warmup epochs of 200, batch 256. The robust eval is PGD-10 on the
classification head (eps 8/255, 1,000 test images) with the sanity suite.

`:tiny` is the ViT of configs/digits_vit_mae.py on the embedded digits with eps 0.1 (PGD-3)
for 600 steps.
Expected (:tiny): docs/robustness.md.

Commands:
  python -m mmjax.main --config=configs/papers/robust_mae.py:tiny --workdir=/tmp/robust_mae
"""
from mmjax.config import default_config
from configs.common import config_variant, use_cifar10, use_embedded_digits


def get_config(arg=None):
  variant = config_variant(arg, "configs/papers/robust_mae.py")
  c = default_config()
  use_cifar10(c)
  c.model = dict(name="vit", image_size=32, patch_size=4, channels=3, width=192, depth=12,
                 num_heads=3, mlp_dim=768, num_classes=10, pool="gap", decoder_width=128,
                 decoder_depth=2, decoder_heads=4)
  c.objective = dict(name="sum", terms=dict(
      mae=dict(weight=1.0, mask_ratio=0.75, norm_pix_loss=True),
      supervised=dict(weight=1.0)))
  c.adversarial.update(dict(kind="combined", attack="pgd", eps=8 / 255, steps=3,
                            step_size=3 / 255, lam=1.0, clean_weight=1.0,
                            attack_loss="mae"))
  steps_per_epoch, epochs = 195, 200
  c.optim.update(dict(name="adamw", learning_rate=1.5e-4, b2=0.95, weight_decay=0.05,
                      warmup_steps=40 * steps_per_epoch, clip_norm=1.0))
  c.evals.robust = dict(type="robust", attack="pgd", eps=8 / 255, steps=10,
                        num_examples=1000, curve_eps=(2 / 255, 4 / 255, 8 / 255, 16 / 255))
  c.train.eval_batch_size = 500
  batch = 256
  if variant == "tiny":
    use_embedded_digits(c, augment="random_crop(28, pad=2)")
    c.model.update(dict(image_size=28, channels=1, width=64, depth=4, num_heads=4,
                        mlp_dim=128, decoder_width=64, decoder_depth=1, decoder_heads=4))
    c.adversarial.update(dict(eps=0.1, step_size=0.05))
    c.optim.update(dict(learning_rate=3e-3, warmup_steps=50))
    c.evals.robust.update(dict(eps=0.1, steps=20, step_size=0.01, num_examples=500,
                               curve_eps=(0.05, 0.1, 0.2, 0.3)))
    c.train.eval_batch_size = 250
    steps_per_epoch, epochs, batch = 60, 10, 64
  c.train.update(dict(total_steps=steps_per_epoch * epochs, batch_size=batch,
                      log_every=steps_per_epoch, eval_every=0,
                      checkpoint_every=steps_per_epoch * 5))
  return c
