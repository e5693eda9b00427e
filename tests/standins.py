"""Stand-ins for the local files paper configs name (a tokenizer, a checkpoint folder),
which do not exist offline: with them a full variant's checks reach its dataset."""
import json
import os
import shutil

import numpy as np

from mmjax.interop import bundled

# bert-base-uncased's config.json as Hugging Face publishes it.
BERT_BASE_UNCASED_JSON = dict(
    architectures=["BertForMaskedLM"], attention_probs_dropout_prob=0.1, hidden_act="gelu",
    hidden_dropout_prob=0.1, hidden_size=768, initializer_range=0.02, intermediate_size=3072,
    layer_norm_eps=1e-12, max_position_embeddings=512, model_type="bert",
    num_attention_heads=12, num_hidden_layers=12, pad_token_id=0, type_vocab_size=2,
    vocab_size=30522)


def gpt2_like_tokenizer(folder) -> str:
  """Writes a byte-level BPE tokenizer.json with GPT-2's layout (ByteLevel pre-tokenizer,
  no template, <|endoftext|> as its only special token) into `folder`; returns it."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(["the digit seven written by hand"] * 20, trainer)
  os.makedirs(folder, exist_ok=True)
  tok.save(os.path.join(folder, "tokenizer.json"))
  return str(folder)


def bert_base_uncased_standin(folder) -> str:
  """bert-base-uncased's config.json plus the bundled MiniLM's tokenizer files (the same
  uncased 30,522-entry vocabulary) in `folder`, and a model.safetensors holding only the
  pooler (the config check reads tensor names, not weights). Returns `folder`."""
  from safetensors.numpy import save_file
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(BERT_BASE_UNCASED_JSON, f)
  save_file({"pooler.dense.weight": np.zeros((768, 768), np.float32),
             "pooler.dense.bias": np.zeros((768,), np.float32)},
            os.path.join(folder, "model.safetensors"))
  for name in ("vocab.txt", "tokenizer_config.json", "tokenizer.json"):
    shutil.copy(os.path.join(bundled.minilm_path(), name), folder)
  return str(folder)
