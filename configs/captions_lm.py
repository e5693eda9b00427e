r"""A small text Transformer trained on the digit captions, byte-level tokens.

`--config=configs/captions_lm.py` (or `:clm`): a causal decoder with next-token
prediction (GPT-style). `--config=configs/captions_lm.py:mlm`: a bidirectional encoder
with BERT masking (15%, 80/10/10). The captions of `mmjax_digits` ("a handwritten
seven", "the digit 7 written by hand", ...) are tokenized in the input pipeline by the
`tokenize` op (bytes; a SentencePiece model with tokenizer='sentencepiece').

Reproduces: nothing published; it exercises the text path end to end on CPU.
Expected (measured 2026-11-25, 300 steps, 2 CPU cores; docs/benchmarks.md): :clm eval
perplexity 1.24 and next-token accuracy 0.919 in 27 s (uniform over bytes would be 260;
the captions are templated, so they are easy); :mlm masked-token accuracy 0.828 in 24 s.

Command:
  python -m mmjax.main --config=configs/captions_lm.py:mlm --workdir=/tmp/mmjax_mlm
"""
from mmjax.config import default_config
from mmjax.errors import ConfigError

OBJECTIVES = ("clm", "mlm")


def get_config(arg=None):
  objective = arg or "clm"
  if objective not in OBJECTIVES:
    raise ConfigError(f"configs/captions_lm.py takes :clm or :mlm, got {arg!r}.")
  c = default_config()
  spec = "tokenize('caption', 'text', max_len=48)|keep('text', 'text_mask')"
  c.data.preprocess_train = spec
  c.data.preprocess_eval = spec
  c.model = dict(name="text_transformer", vocab_size=260, max_len=48, width=64, depth=2,
                 num_heads=4, mlp_dim=256, causal=objective == "clm", lm_head=True)
  c.objective = dict(name=objective)
  c.optim.update(dict(name="adamw", learning_rate=3e-3, warmup_steps=30,
                      weight_decay=0.01, clip_norm=1.0))
  c.train.update(dict(total_steps=300, batch_size=64, log_every=50, eval_every=150,
                      checkpoint_every=150))
  c.train.eval_batch_size = 250
  c.evals.loss.max_batches = 2
  return c
