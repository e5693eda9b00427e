r"""CLIP: contrastive language-image pretraining (Radford et al. 2021), ViT-B/32.

Reproduces (`:full`): the ViT-B/32 CLIP of the paper's appendix hyperparameter tables.
Image tower ViT-B/32 (224 px, patch 32, width 768, 12 layers, 12 heads, MLP 3072, CLIP's
pixel mean/std); text tower of 12 layers over 77 tokens; each projected without bias to
a joint 512-d embedding; symmetric InfoNCE with a learnable temperature initialised at
0.07 (scale 1/0.07) and the scale clipped at 100. AdamW lr 5e-4, betas (0.9, 0.98), eps
1e-6, weight decay 0.2 (not on gains, biases, the logit scale), 2,000 warmup steps then
cosine; batch 32,768 for 32 epochs of 400M pairs = 390,625 steps. Only augmentation: a
random square crop of the resized image. Published: 63.2% zero-shot ImageNet top-1 (the
paper's zero-shot table, ViT-B/32). Eval here: held-out image<->text recall@1/5/10 over
5,000 pairs (`evals.retrieval`). `evals.zero_shot` classifies by prompts, but only on
the training data's own labelled eval split: zero-shot ImageNet needs a second eval
dataset with human-readable class names (TFDS gives WordNet ids), not supported yet.

Dataset: CLIP's WIT-400M is not public; `:full` reads TFDS `laion400m/images` (400M
web image-alt-text pairs, the public stand-in of the same size; a manual download with
img2dataset, see the TFDS page), the last 10,000 pairs held out for eval.

Deviations: (1) mmjax's multimodal model has one width for all towers, so the text tower
is 768 wide with 12 heads and MLP 3072 (CLIP: 512, 8 heads, 2048): ~48M more parameters
in the text tower; the image tower is exact. (2) Byte-level tokens (vocab 260, BOS + 75
bytes + EOS = 77) instead of the 49,408-token BPE; with a CLIP tokenizer.json use
`tokenize(..., tokenizer='huggingface', tokenizer_path=DIR)` in data.preprocess_* and
model.vocab_size=49408. (3) Mean-pooled towers with a bidirectional text encoder (CLIP:
class token; causal text attention read at EOT). (4) LAION-400M for WIT-400M.
Keep grad_accum_steps at 1: accumulation would shrink the in-batch negatives.

Expected hardware time of `:full`: 6 x params x tokens gives ~65 GFLOPs per pair (image
85M x 50 tokens, text 85M x 77), x 12.8B pairs = 8e20 FLOPs: ~560 H100-hours at 40% MFU,
about 3 days on 8 H100s (an estimate, not measured; the paper gives no time for B/32 and
trained its largest ViT, L/14, in 12 days on 256 V100s).

`:tiny` aligns images and captions of the embedded digits (image_text_digits_tiny,
byte captions of 32 tokens) with the same loss, temperature and AdamW betas/eps/decay, on
a 2-layer width-64 two-tower model, 1,200 steps of batch 64; its eval is class-level
image<->caption recall@K over 500 test digits and zero-shot classification of them by
the prompts "a handwritten {}" and "the digit {}" ("zero" ... "nine", `evals.zero_shot`);
lr 3e-3 with 30 warmup steps. Measured (2026-11-25, 2 CPU cores, 67 s with compilation
and evals, cores shared; crops on the devices): zero-shot accuracy 0.896 (0.696 at step
600; chance 0.10), R@1 image->text 0.910, text->image 1.000 (0.722 / 0.880 at step 600);
in-batch instance top-1 0.089
among 250 (templated captions: see configs/multimodal_digits.py); the temperature stays
near 0.07.

Commands:
  python -m mmjax.main --config=configs/papers/clip_vit_b32.py:tiny --workdir=/tmp/clip
  python -m mmjax.main --config=configs/papers/clip_vit_b32.py --workdir=/tmp/clip_full
"""
import math

from mmjax.config import default_config
from configs.common import config_variant, image_text_digits_tiny

# CLIP's image normalisation (the WIT statistics its preprocessing uses).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def get_config(arg=None):
  variant = config_variant(arg, "configs/papers/clip_vit_b32.py")
  c = default_config()
  max_len = 77
  c.data.name = "laion400m/images"
  c.data.train_split, c.data.eval_split = "train[:-10000]", "train[-10000:]"
  c.model = dict(name="multimodal", modalities=("image", "text"), fusion="towers",
                 width=768, depth=12, num_heads=12, mlp_dim=3072, image_size=224,
                 patch_size=32, channels=3, vocab_size=260, max_len=max_len, projection_dim=512,
                 logit_scale_init=math.log(1 / 0.07), dtype="bfloat16")
  c.objective = dict(name="contrastive", pairs=(("image", "text"),), loss="infonce",
                     max_scale=100.0)
  c.optim.update(dict(name="adamw", learning_rate=5e-4, b1=0.9, b2=0.98, eps=1e-6,
                      weight_decay=0.2, warmup_steps=2000, schedule="cosine"))
  c.train.update(dict(total_steps=32 * 400_000_000 // 32_768, batch_size=32_768,
                      log_every=100, eval_every=10_000, checkpoint_every=5_000))
  c.train.eval_batch_size = 1024
  c.evals.loss.max_batches = 10
  c.evals.retrieval = dict(type="retrieval", pairs=(("image", "text"),), ks=(1, 5, 10),
                          num_examples=5000, by_label=False)
  if variant == "tiny":
    image_text_digits_tiny(c)
    return c
  c.model.update(dict(pixel_mean=CLIP_MEAN, pixel_std=CLIP_STD))
  text = f"tokenize('caption', 'text', max_len={max_len})"
  keep = "keep('image', 'text', 'text_mask')"
  c.data.preprocess_train = f"resize_small(224)|random_crop(224)|to_float|{text}|{keep}"
  c.data.preprocess_eval = f"resize_small(224)|center_crop(224)|to_float|{text}|{keep}"
  c.data.shuffle_buffer = 250_000
  return c
