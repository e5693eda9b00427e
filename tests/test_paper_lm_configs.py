"""The language-model paper configs' settings: nanoGPT's step, GPT-2's and BERT's token
ids, LoRA's schedule (their full variants' dataset errors: tests/test_configs.py, with the
stand-ins of tests/standins.py)."""
import importlib.util
import os

from mmjax.config import load_config_file
from mmjax.data import ops, tokenizers
from mmjax.interop import bundled
from tests.standins import bert_base_uncased_standin, gpt2_like_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPERS = os.path.join(REPO, "configs", "papers")


def _module(name):
  spec = importlib.util.spec_from_file_location(f"paper_{name}",
                                                os.path.join(PAPERS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_gpt2_full_takes_nanogpts_tokens_per_step(tmp_path, monkeypatch):
  monkeypatch.setenv("MMJAX_GPT2_TOKENIZER", gpt2_like_tokenizer(tmp_path / "gpt2"))
  config = load_config_file(os.path.join(PAPERS, "gpt2_124m.py"))
  assert config.train.batch_size * config.model.max_len == 491_520   # nanoGPT's step
  assert config.train.batch_size // config.optim.grad_accum_steps == 96


def test_gpt2_style_tokenizer_has_no_framing(tmp_path):
  """GPT-2's tokenizer.json adds no BOS/EOS: ids are the BPE pieces, padded with 0 and
  masked; the config's spec yields [1024] ids and mask."""
  tok = tokenizers.make_tokenizer("huggingface", gpt2_like_tokenizer(tmp_path / "gpt2"))
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (-1, -1, 0)
  ids, mask = tok.encode("the digit", 8)
  n = int(mask.sum())
  assert 1 <= n <= 8 and mask[:n].all() and not mask[n:].any() and not ids[n:].any()
  assert tok.decode(ids, mask) == "the digit"


def test_bert_mlm_masks_with_the_vocabularys_mask_token():
  """[MASK] is id 103 and ids below 999 are the specials and [unused*] entries in the
  tokenizer the :full config uses (the bundled MiniLM's = bert-base-uncased's)."""
  bert = _module("bert_base_mlm")
  config = load_config_file(os.path.join(PAPERS, "bert_base_mlm.py"))
  assert config.adversarial.kind == "none"
  assert config.objective.mask_token_id == bert.MASK_ID == 103
  assert config.objective.num_special_tokens == bert.FIRST_WORD_PIECE == 999
  path = bundled.minilm_path()
  with open(os.path.join(path, "vocab.txt"), encoding="utf-8") as f:
    vocab = [line.rstrip("\n") for line in f]
  assert len(vocab) == config.model.vocab_size == 30_522
  assert vocab[bert.MASK_ID] == "[MASK]" and vocab[bert.FIRST_WORD_PIECE] == "!"
  assert all(w.startswith("[") and w.endswith("]") for w in vocab[:bert.FIRST_WORD_PIECE])
  # The :full spec frames with [CLS] ... [SEP] at 128 word pieces.
  fn = ops.build_preprocess_fn(config.data.preprocess_train)
  import tensorflow as tf
  out = fn({"text": tf.constant("Hello world")}, tf.constant([0, 0], tf.int64))
  assert out["text"].numpy()[:4].tolist() == [101, 7592, 2088, 102]
  assert out["text"].shape == (128,) and int(out["text_mask"].numpy().sum()) == 4


def test_lora_glue_full_takes_the_papers_schedule(tmp_path, monkeypatch):
  folder = bert_base_uncased_standin(tmp_path / "bert-base-uncased")
  monkeypatch.setenv("MMJAX_BERT_DIR", folder)
  config = load_config_file(os.path.join(PAPERS, "lora_glue.py"))
  assert config.finetune.init_from == folder and config.finetune.mode == "lora"
  assert (config.model.lora_rank, config.model.lora_alpha) == (8, 8.0)
  assert config.train.total_steps == 60 * 67_349 // 16 == 252_558
  assert config.optim.warmup_steps == int(0.06 * 252_558)
