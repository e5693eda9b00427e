r"""GPT-2 124M pretraining with the nanoGPT recipe (Radford et al. 2019, "Language models are
unsupervised multitask learners"; recipe: Karpathy's nanoGPT, config/train_gpt2.py).

Reproduces (`:full`): a GPT-2-small decoder (12 pre-LN layers, width 768, 12 heads, MLP
3072, context 1,024, vocabulary 50,257, tied read-out: 124,439,808 parameters, GPT-2's
own count), next-token loss, AdamW 6e-4 (betas 0.9/0.95, weight decay 0.1 on weights
and embeddings, not on biases or LayerNorms), 2,000 warmup steps then cosine to 6e-5 at
600,000 steps, gradient clipping 1.0, no dropout, bfloat16 compute with float32 master
weights. 480 sequences of 1,024 tokens a step (491,520 tokens) as 5 accumulated
micro-batches of 96 (nanoGPT: 12 per GPU x 8 GPUs x 5). Published: nanoGPT reaches val
loss ~2.85 on OpenWebText; the released GPT-2 124M checkpoint gets 3.11 on OWT zero-shot
(~2.85 after fine-tuning on it). Eval: the loss on 25 batches of 96 validation sequences
every 1,000 steps (nanoGPT: 200 x 12). Expected time: nanoGPT's 4 days on 8 A100 40GB;
llm.c's 468K tokens/s per H100 gives ~7 days on one H100, ~22 h on 8.

Tokenizer: GPT-2's byte-level BPE from a Hugging Face folder holding its tokenizer.json
(`huggingface-cli download gpt2 tokenizer.json --local-dir DIR`), given by the
environment variable MMJAX_GPT2_TOKENIZER (default ~/models/gpt2).

Deviations: (1) data: TFDS `c4/en` (web text, the closest catalogue dataset to
OpenWebText; `tfds build c4/en`, hundreds of GB), not OpenWebText: `tfds.builder`
resolves the community name `huggingface:openwebtext/plain_text` by asking the Hugging
Face Hub (offline: ~20 s of retries, then an error), which neither offline clusters nor
CI can do; val losses on C4 are not comparable with the OWT figures above. (2) Packing
(`data.pack`, mmjax/data/packing.py): nanoGPT cuts random 1,024-token windows from all
documents concatenated with <|endoftext|>; here each window of 64 shuffled documents
(each cut at 8,192 tokens) is concatenated with <|endoftext|> after each and cut into
28 full blocks, so a few percent of tokens at a window's end are dropped or padded
(that fixed count is what makes resuming exact), and the eval loss is per document (its
first 1,024 tokens), not over packed windows. As in nanoGPT, attention crosses document
boundaries inside a block. (3) The vocabulary is GPT-2's 50,257, not nanoGPT's 50,304
padding (a speed trick).

`:tiny` is a causal LM on the embedded digit captions (byte tokens, 2 layers of width 64,
as configs/captions_lm.py), with the same optimizer shape, 300 steps of 64 packed blocks
of 48 tokens. Measured (2026-11-25, 2 CPU cores): eval perplexity 1.27, next-token
accuracy 0.920 on 500 test captions, in 26 s.

Commands:
  python -m mmjax.main --config=configs/papers/gpt2_124m.py:tiny --workdir=/tmp/gpt2_tiny
  tfds build c4/en && MMJAX_GPT2_TOKENIZER=/models/gpt2 python -m mmjax.main \
      --config=configs/papers/gpt2_124m.py --workdir=/tmp/gpt2_124m
"""
import os

from mmjax.config import default_config
from configs.common import config_variant


def get_config(arg=None):
  variant = config_variant(arg, "configs/papers/gpt2_124m.py")
  c = default_config()
  c.model = dict(name="text_transformer", vocab_size=50_257, max_len=1024, width=768,
                 depth=12, num_heads=12, mlp_dim=3072, causal=True, lm_head=True,
                 tie_embeddings=True, dropout=0.0, dtype="bfloat16")
  c.objective = dict(name="clm")
  total = 600_000
  c.optim.update(dict(name="adamw", learning_rate=6e-4, b1=0.9, b2=0.95, weight_decay=0.1,
                      schedule="cosine", warmup_steps=2000, end_lr_factor=0.1,
                      clip_norm=1.0, grad_accum_steps=5))
  c.train.update(dict(total_steps=total, batch_size=480, log_every=100, eval_every=1000,
                      checkpoint_every=5000))
  c.train.eval_batch_size = 96
  c.evals.loss.max_batches = 25
  c.data.update(dict(name="c4/en", train_split="train", eval_split="validation",
                     shuffle_buffer=100_000))
  path = os.path.expanduser(os.environ.get("MMJAX_GPT2_TOKENIZER", "~/models/gpt2"))
  bpe = f"tokenizer='huggingface', tokenizer_path={path!r}"
  # Training packs documents (up to 8,192 tokens each) into full 1,024-token blocks with
  # <|endoftext|> (50256) after each: 28 blocks per window of 64 documents, sized for
  # C4's ~430 tokens per document (156B T5 tokens / 365M documents); measure yours with
  # mmjax.data.packing.window_stats and adjust `blocks`. Eval reads one document per
  # sequence (its first 1,024 tokens).
  train_tokenize = f"tokenize('text', 'text', max_len=8192, {bpe})"
  tokenize = f"tokenize('text', 'text', max_len=1024, {bpe})"
  c.data.pack = dict(length=1024, documents=64, blocks=28, eos_id=50_256, key="text")
  if variant == "tiny":
    c.data.update(dict(name="mmjax_digits", train_split="train", eval_split="test",
                       shuffle_buffer=4000))
    c.model.update(dict(vocab_size=260, max_len=48, width=64, depth=2, num_heads=4,
                        mlp_dim=256, dtype="float32"))
    c.optim.update(dict(learning_rate=3e-3, warmup_steps=30, grad_accum_steps=1))
    c.train.update(dict(total_steps=300, batch_size=64, log_every=50, eval_every=150,
                        checkpoint_every=150))
    c.train.eval_batch_size = 250
    c.evals.loss.max_batches = 2
    tokenize = train_tokenize = "tokenize('caption', 'text', max_len=48)"
    # Byte captions are framed with BOS/EOS already; 16 of ~27 tokens fill 9 blocks of
    # 48 (window_stats on the train split: fill 0.97, 1.9% of tokens dropped).
    c.data.pack = dict(length=48, documents=16, blocks=9, eos_id=-1, key="text")
  c.data.preprocess_train = f"{train_tokenize}|keep('text', 'text_mask')"
  c.data.preprocess_eval = f"{tokenize}|keep('text', 'text_mask')"
  return c
