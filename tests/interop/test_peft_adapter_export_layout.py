"""Unmerged LoRA adapters exported in Hugging Face PEFT's layout: file names, config
fields, key names, shapes [r, in] / [out, r] and values, read back exactly (scanned
layers too), refused for models PEFT's LoRA format cannot describe; and, when torch,
transformers and peft are installed, reloaded by `peft.PeftModel` with the same logits."""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from mmjax import interop, models
from mmjax.errors import ConfigError
from mmjax.interop import peft_adapters

BERT = dict(name="text_transformer", vocab_size=100, max_len=16, width=32, depth=2,
            num_heads=4, mlp_dim=64, num_classes=3, causal=False, pool="first",
            norm_position="post", embed_norm=True, pooler=True, layer_norm_eps=1e-12,
            activation="gelu", type_vocab_size=2, lm_head=False, dropout=0.0,
            lora_rank=4, lora_alpha=8.0, lora_targets=("query", "value", "fc2"))
BATCH = {"text": np.arange(20, dtype=np.int32).reshape(2, 10) % 97 + 2,
         "text_mask": np.ones((2, 10), np.int32)}


def _params(config, seed=0):
  """Random values of every parameter's shape (abstract init: nothing compiles); LoRA B
  is nonzero, unlike a fresh one, so the value checks are not empty."""
  model = models.build_model(config)
  abstract = models.abstract_variables(model, BATCH)["params"]
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.1, s.dtype),
                        abstract)
  return model, params


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  model, params = _params(BERT)
  path = str(tmp_path_factory.mktemp("peft") / "adapter")
  interop.save_peft_adapter(path, BERT, params, base_model_name_or_path="/base")
  return model, params, path


def test_files_config_and_keys_are_peft_layout(exported):
  _, params, path = exported
  assert sorted(os.listdir(path)) == ["adapter_config.json", "adapter_model.safetensors"]
  config = json.load(open(os.path.join(path, "adapter_config.json")))
  assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 4, 8.0)
  assert config["task_type"] == "SEQ_CLS" and config["modules_to_save"] == ["classifier"]
  assert config["base_model_name_or_path"] == "/base"
  # fc2 targeted: an exact regex (PEFT's suffix 'output.dense' would also catch
  # attention.output.dense).
  import re
  pattern = re.compile(config["target_modules"])
  assert pattern.fullmatch("bert.encoder.layer.1.output.dense")
  assert pattern.fullmatch("bert.encoder.layer.0.attention.self.query")
  assert not pattern.fullmatch("bert.encoder.layer.0.attention.output.dense")
  from safetensors.numpy import load_file
  tensors = load_file(os.path.join(path, "adapter_model.safetensors"))
  layer0 = "base_model.model.bert.encoder.layer.0."
  assert tensors[layer0 + "attention.self.query.lora_A.weight"].shape == (4, 32)   # [r, in]
  assert tensors[layer0 + "attention.self.query.lora_B.weight"].shape == (32, 4)   # [out, r]
  assert tensors[layer0 + "output.dense.lora_A.weight"].shape == (4, 64)
  assert tensors[layer0 + "output.dense.lora_B.weight"].shape == (32, 4)
  assert len(tensors) == 2 * 2 * 3 + 2   # A and B of 3 targets x 2 layers, head W and b
  # Values: PEFT's ΔW = (alpha / r) B A equals mmjax's (alpha / r) (A B)^T.
  lora = params["encoder"]["block_1"]["attn"]["value_lora"]
  delta_mmjax = np.asarray(lora["a"]).reshape(32, 4) @ np.asarray(lora["b"]).reshape(4, 32)
  key = "base_model.model.bert.encoder.layer.1.attention.self.value."
  delta_peft = tensors[key + "lora_B.weight"] @ tensors[key + "lora_A.weight"]
  np.testing.assert_allclose(delta_peft, delta_mmjax.T, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(tensors["base_model.model.classifier.weight"],
                                np.asarray(params["head"]["kernel"]).T)


def test_read_back_is_exact_also_from_scanned_layers(exported, tmp_path):
  _, params, path = exported
  flat = traverse_util.flatten_dict(params, sep="/")
  back = interop.read_peft_adapter(path, BERT)
  assert set(back) == {k for k in flat if "_lora/" in k or k.startswith("head/")}
  for k, v in back.items():
    np.testing.assert_array_equal(v, np.asarray(flat[k]), err_msg=k)
  scanned_cfg = {**BERT, "scan_layers": True, "lora_targets": ("query", "value")}
  _, scanned = _params(scanned_cfg, seed=1)
  interop.save_peft_adapter(str(tmp_path / "scanned"), scanned_cfg, scanned)
  back = interop.read_peft_adapter(str(tmp_path / "scanned"), scanned_cfg)
  stacked = scanned["encoder"]["blocks"]["attn"]["query_lora"]["a"]
  np.testing.assert_array_equal(back["encoder/block_1/attn/query_lora/a"],
                                np.asarray(stacked[1]))
  config = json.load(open(tmp_path / "scanned" / "adapter_config.json"))
  assert config["target_modules"] == ["query", "value"]


def test_models_peft_lora_cannot_hold_are_refused(tmp_path):
  with pytest.raises(ConfigError, match="AdaLoRA adapters are exported merged"):
    peft_adapters.adapter_config({**BERT, "adalora": True})
  with pytest.raises(ConfigError, match="BERT-family encoders"):
    interop.save_peft_adapter(str(tmp_path / "x"), {**BERT, "norm_position": "pre"}, {})
  with pytest.raises(ConfigError, match="no LoRA adapters"):
    peft_adapters.adapter_config({**BERT, "lora_rank": 0})
  assert not os.path.exists(tmp_path / "x")


def test_peft_reloads_the_adapter_with_the_same_logits(exported, tmp_path):
  if "tensorflow" in sys.modules and "torch" not in sys.modules:
    pytest.skip("TensorFlow is loaded in this process and importing torch after it "
                "aborts; run this file alone.")
  torch = pytest.importorskip("torch", reason="pip install torch transformers peft")
  transformers = pytest.importorskip("transformers")
  peft = pytest.importorskip("peft")
  model, params, path = exported
  base_cfg = {**BERT, "lora_rank": 0}
  base_params = {k: v for k, v in traverse_util.flatten_dict(params, sep="/").items()
                 if "_lora/" not in k}
  base = interop.save_pretrained(str(tmp_path / "base"), base_cfg,
                                 traverse_util.unflatten_dict(base_params, sep="/"))
  hf = transformers.AutoModelForSequenceClassification.from_pretrained(base)
  hf = peft.PeftModel.from_pretrained(hf, path).eval()
  with torch.no_grad():
    got = hf(input_ids=torch.tensor(BATCH["text"], dtype=torch.long),
             attention_mask=torch.tensor(BATCH["text_mask"])).logits.numpy()
  want = np.asarray(model.apply({"params": params}, BATCH)["logits"])
  np.testing.assert_allclose(got, want, atol=1e-4)
