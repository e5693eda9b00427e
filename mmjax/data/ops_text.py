"""Text preprocessing ops: strings -> fixed-length token ids + mask."""
from __future__ import annotations

from mmjax.data import tokenizers
from mmjax.data.host_registry import OPS
from mmjax.data.lazy_tf import tf
from mmjax.errors import ConfigError


def _tokenize_bytes(text: tf.Tensor, max_len: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Graph version of `tokenizers.encode_bytes`: scalar string -> ids, mask [max_len]."""
  body = tf.cast(tf.io.decode_raw(text, tf.uint8), tf.int32)[: max_len - 2]
  ids = tf.concat([[tokenizers.BOS], body + tokenizers.NUM_SPECIAL, [tokenizers.EOS]], 0)
  pad = max_len - tf.shape(ids)[0]
  mask = tf.pad(tf.ones_like(ids), [[0, pad]])
  ids = tf.pad(ids, [[0, pad]], constant_values=tokenizers.PAD)
  return tf.ensure_shape(ids, [max_len]), tf.ensure_shape(mask, [max_len])


def _text(value) -> str:
  """A scalar string inside tf.numpy_function -> str: TF passes bytes (or a 0-d numpy
  array of bytes, depending on the version)."""
  value = value.item() if hasattr(value, "item") else value
  return value.decode("utf-8")


@OPS.register("tokenize")
def tokenize(key: str = "caption", out: str = "text", max_len: int = 32,
             tokenizer: str = "bytes", tokenizer_path: str | None = None,
             sp_model: str | None = None):
  """example[key] (scalar string) -> example[out] int32 [max_len], example[out+'_mask'].

  Sequences are [BOS, tokens..., EOS, PAD...]; too-long text is truncated (EOS kept).
  `tokenizer='sentencepiece'` with `tokenizer_path=` a .model file, or
  `tokenizer='wordpiece'` with `tokenizer_path=` a Hugging Face folder (tokenizer.json or
  vocab.txt; BERT framing [CLS] ... [SEP]), run via numpy_function: the file must be
  readable on every host. `sp_model` is the old name of `tokenizer_path`.
  """
  if not isinstance(max_len, int) or max_len < 2:
    raise ConfigError(f"Preprocessing op 'tokenize': max_len must be an int >= 2, got {max_len!r}.")
  # Validates (and loads) eagerly.
  tok = tokenizers.make_tokenizer(tokenizer, tokenizer_path, sp_model=sp_model)

  if isinstance(tok, tokenizers.ByteTokenizer):
    encode = lambda text: _tokenize_bytes(text, max_len)
  else:
    def encode(text):
      ids, mask = tf.numpy_function(lambda s: tok.encode(_text(s), max_len),
                                    [text], [tf.int32, tf.int32], stateful=False)
      return tf.ensure_shape(ids, [max_len]), tf.ensure_shape(mask, [max_len])

  def op(example, seed):
    del seed
    ids, mask = encode(example[key])
    return {**example, out: ids, f"{out}_mask": mask}
  return op
