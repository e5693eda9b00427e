r"""A GPT-2 XL-sized decoder (1.5B parameters) trained with FSDP: the scale-out config.

Model: 48 pre-LN layers, width 1600, 25 heads, MLP 6400, 1,024-token context, tied
embeddings, GPT-2's vocabulary of 50,257 padded to 50,304 (a multiple of 64, as nanoGPT
does, so it shards evenly): 1,557,686,400 parameters. bfloat16 compute with float32
master weights, layers scanned (one compiled block), remat 'dots_no_batch' (saves the
weight matmuls' outputs, recomputes the rest).

Mesh for 256 devices: {'data': 4, 'fsdp': 64}. FSDP shards parameters and AdamW's
moments 64 ways along the width (1600 = 25 x 64; 256 does not divide it), and the four
FSDP groups are data-parallel. Global batch 512 x 1,024 tokens (0.5M tokens, GPT-2's),
AdamW 6e-4 (the nanoGPT recipe: b2 0.95, wd 0.1, clip 1.0, cosine to 10% with 2,000
warmup steps).

Data (`:full`): TFDS `c4/en` (`tfds build c4/en` first; hundreds of GB), tokenized with
a SentencePiece model of 50,304 pieces that you give as the config argument
(`:full,/path/to/sp.model`); mmjax ships no GPT-2 BPE.

Plan (no data or TPU needed; recorded in docs/benchmarks.md):
  python -m mmjax.main --config=configs/scale/gpt2_xl_fsdp.py --workdir=/tmp/plan_gpt2xl \
      --mode=plan
compiles the train step for 256 fake CPU devices and checks it against 16 GiB of HBM per
device (TPU v5e); --config.plan.topology=v5e:16x16 compiles for the real topology with
jax[tpu] installed.

`:tiny` is the same recipe at digit-caption size (2 layers, width 64, bytes) on the
embedded dataset, FSDP over all local devices:
  python -m mmjax.main --config=configs/scale/gpt2_xl_fsdp.py:tiny --workdir=/tmp/gpt_tiny
"""
from mmjax.config import default_config
from configs.common import config_variant, shrink_to_local


def get_config(arg=None):
  variant, _, sp_model = (arg or "full").partition(",")
  variant = config_variant(variant, "configs/scale/gpt2_xl_fsdp.py")
  c = default_config()
  c.model = dict(name="text_transformer", vocab_size=50_304, max_len=1024, width=1600,
                 depth=48, num_heads=25, mlp_dim=6400, causal=True, lm_head=True,
                 tie_embeddings=True, scan_layers=True, remat="dots_no_batch",
                 dtype="bfloat16")
  c.objective = dict(name="clm")
  c.optim.update(dict(name="adamw", learning_rate=6e-4, b1=0.9, b2=0.95, eps=1e-8,
                      weight_decay=0.1, clip_norm=1.0, schedule="cosine",
                      warmup_steps=2000, end_lr_factor=0.1))
  c.train.update(dict(total_steps=600_000, batch_size=512, log_every=100,
                      eval_every=5000, checkpoint_every=5000))
  c.mesh.shape = {"data": 4, "fsdp": 64}
  c.plan.update(dict(devices=256, hbm_gib=16.0))
  tok = (f"tokenize('text', 'text', max_len=1024, tokenizer='sentencepiece', "
         f"sp_model='{sp_model}')")
  c.data.update(dict(name="c4/en", train_split="train", eval_split="validation",
                     preprocess_train=f"{tok}|keep('text', 'text_mask')",
                     preprocess_eval=f"{tok}|keep('text', 'text_mask')"))
  c.train.eval_batch_size = 512
  c.evals.loss.max_batches = 20
  if variant == "tiny":
    spec = "tokenize('caption', 'text', max_len=48)|keep('text', 'text_mask')"
    c.data.update(dict(name="mmjax_digits", train_split="train", eval_split="test",
                       preprocess_train=spec, preprocess_eval=spec, shuffle_buffer=4000))
    c.model.update(dict(vocab_size=260, max_len=48, width=64, depth=2, num_heads=4,
                        mlp_dim=256, dtype="float32"))
    c.optim.update(dict(learning_rate=3e-3, warmup_steps=30))
    shrink_to_local(c)
  return c
