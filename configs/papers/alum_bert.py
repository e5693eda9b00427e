r"""ALUM: adversarial training for large neural language models (Liu et al. 2020), as
continual MLM pretraining of a BERT-base-shaped encoder.

Reproduces (`:full`): BERT-base (12 layers, width 768, 12 heads, MLM 15% with 80/10/10)
trained with loss MLM + 10 * symKL(p(x), p(x + delta)) on the token-embedding output, the
perturbation found by one l-inf ascent step of 1e-3 from a random start inside 1e-3
(ALUM: N(0,1)*1e-5 start, one step of 1e-3, l-inf normalised; SMART is alpha 1, step and
noise 1e-5: `--config.adversarial.lam=1 --config.adversarial.eps=1e-5
--config.adversarial.step_size=1e-5`). AdamW 1e-4, batch 256, on TFDS `wikipedia`
(`tfds build wikipedia/20230601.en` first; tens of GB). Deviation: byte-level tokens (260)
unless you give a SentencePiece model (`tokenize(..., tokenizer='sentencepiece',
sp_model=PATH)` in data.preprocess_* and model.vocab_size to match); ALUM starts from a
pretrained BERT, which needs the checkpoint import of the fine-tuning issue.

`:tiny` runs the same objective on the embedded digit captions with the small
text encoder of configs/captions_lm.py:mlm (300 steps). Expected (:tiny):
docs/robustness.md.

Commands:
  python -m mmjax.main --config=configs/papers/alum_bert.py:tiny --workdir=/tmp/alum
"""
from mmjax.config import default_config
from configs.common import config_variant


def get_config(arg=None):
  variant = config_variant(arg, "configs/papers/alum_bert.py")
  c = default_config()
  max_len = 128
  c.data.name = "wikipedia/20230601.en"
  c.data.eval_split = "train[-1%:]"
  c.data.train_split = "train[:-1%]"
  field = "text"
  c.model = dict(name="text_transformer", vocab_size=260, max_len=max_len, width=768,
                 depth=12, num_heads=12, mlp_dim=3072, causal=False, lm_head=True,
                 dropout=0.1)
  c.objective = dict(name="mlm")
  c.adversarial.update(dict(kind="alum", modalities=("text",), attack="pgd", norm="linf",
                            eps=1e-3, step_size=1e-3, steps=1, lam=10.0,
                            consistency_on="lm_logits"))
  c.optim.update(dict(name="adamw", learning_rate=1e-4, warmup_steps=10_000,
                      schedule="linear", weight_decay=0.01, clip_norm=1.0))
  c.train.update(dict(total_steps=1_000_000, batch_size=256, log_every=1000,
                      eval_every=50_000, checkpoint_every=10_000))
  c.train.eval_batch_size = 256
  c.evals.loss.max_batches = 50
  if variant == "tiny":
    c.data.name, c.data.train_split, c.data.eval_split = "mmjax_digits", "train", "test"
    field, max_len = "caption", 48
    c.model.update(dict(max_len=max_len, width=64, depth=2, num_heads=4, mlp_dim=256,
                        dropout=0.0))
    c.optim.update(dict(learning_rate=3e-3, warmup_steps=30))
    c.train.update(dict(total_steps=300, batch_size=64, log_every=50, eval_every=150,
                        checkpoint_every=150))
    c.train.eval_batch_size = 250
    c.evals.loss.max_batches = 2
  spec = f"tokenize('{field}', 'text', max_len={max_len})|keep('text', 'text_mask')"
  c.data.preprocess_train = spec
  c.data.preprocess_eval = spec
  return c
