"""GPT-2 and ViT import/export of `mmjax.interop`, checked against transformers.

- Recorded (no torch/transformers needed, so CI runs them): tiny Hugging Face folders under
  tests/interop/fixtures/ with transformers' outputs (.npz); how they were produced:
  tests/interop/make_family_fixtures.py. GPT-2's tensors are stored in bfloat16 and ViT's
  in float16, so both reader paths (raw bfloat16, safetensors.numpy) are covered.
- Live (skipped unless `pip install transformers torch`): small randomized transformers
  models saved, imported, compared, exported back and reloaded by transformers.
- Errors: each broken folder or override is one ConfigError/CheckpointError, and a
  failed load leaves the folder as it was.
"""
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import types

import jax
import numpy as np
import pytest
from flax import traverse_util

from mmjax import interop
from mmjax.errors import CheckpointError, ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
GPT2_DIR = os.path.join(FIXTURES, "gpt2_tiny")
VIT_DIR = os.path.join(FIXTURES, "vit_tiny")
BERT_MLM_DIR = os.path.join(FIXTURES, "bert_mlm_tiny")
ATOL = 1e-4


def _load_maker():
  """The fixture script as a module (it defines the tiny models the live tests build);
  loaded by path, as tests/interop is not a package. It imports torch only when called."""
  spec = importlib.util.spec_from_file_location(
      "make_family_fixtures", os.path.join(HERE, "make_family_fixtures.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


mk = _load_maker()


def _hf():
  """(torch, transformers), or a skip saying what to install (or why not here)."""
  if "tensorflow" in sys.modules and "torch" not in sys.modules:
    # Importing torch into a process that has loaded TensorFlow aborts it (seen with
    # torch 2.15 + TF 2.20): under pytest-xdist another test may have loaded TF.
    pytest.skip("TensorFlow is loaded in this test process, and importing torch after it "
                "aborts; run this file alone: pytest tests/interop/test_hf_families.py")
  try:
    import torch   # pylint: disable=import-outside-toplevel
    import transformers   # pylint: disable=import-outside-toplevel
  except ImportError:
    pytest.skip("live checks against transformers need: pip install transformers torch")
  return torch, transformers


@functools.lru_cache(maxsize=None)
def _apply(model):
  """One jitted apply per model config (flax modules hash by their fields), so that
  models loaded twice with the same config compile once."""
  return jax.jit(lambda p, b: model.apply({"params": p}, b))


def _gpt2_out(model, params, ids, mask) -> dict:
  out = _apply(model)(params, {"text": ids, "text_mask": mask})
  return {k: np.asarray(out[k]) for k in ("hidden", "lm_logits")}


def _vit_out(model, params, image) -> dict:
  out = _apply(model)(params, {"image": image})
  return {k: np.asarray(v) for k, v in out.items() if k in ("hidden", "logits")}


def _close(got: dict, want: dict, mask=None, atol=ATOL) -> dict:
  """Asserts every output of `want` within `atol` of `got` (at real tokens where `mask`
  [B,T] is given); returns {name: max abs diff}."""
  diffs = {}
  for key, ref in want.items():
    assert got[key].shape == ref.shape, key
    err = np.abs(got[key] - ref)
    if mask is not None:
      err = err * mask[..., None]
    diffs[key] = float(err.max())
    assert diffs[key] <= atol, (key, diffs[key])
  print(diffs)   # shown with -s: the measured differences
  return diffs


def _flat(params) -> dict:
  return traverse_util.flatten_dict(jax.device_get(params), sep="/")


def _assert_same_params(a, b) -> None:
  fa, fb = _flat(a), _flat(b)
  assert sorted(fa) == sorted(fb)
  for key in fa:
    np.testing.assert_array_equal(np.asarray(fa[key]), np.asarray(fb[key]), err_msg=key)


def _round_trip(folder: str, cfg: dict, params) -> dict:
  """mmjax params imported back from exported `folder`, into a zeroed tree (so nothing
  can come from the template); every parameter must come from the folder."""
  zeros = jax.tree.map(np.zeros_like, jax.device_get(params))
  back, report = interop.import_into(folder, cfg, zeros)
  assert report["fresh"] == [] and report["replaced"] == []
  return back


# ---- Recorded fixtures (no torch, no transformers) ----
@pytest.fixture(scope="module")
def gpt2_fixture():
  model, params = interop.load_pretrained(GPT2_DIR)
  return model, params, np.load(GPT2_DIR + ".npz")


@pytest.fixture(scope="module")
def vit_fixture():
  model, params = interop.load_pretrained(VIT_DIR)
  return model, params, np.load(VIT_DIR + ".npz")


def test_gpt2_fixture_matches_transformers(gpt2_fixture):
  cfg = interop.model_config_from_pretrained(GPT2_DIR)
  assert (cfg["width"], cfg["depth"], cfg["num_heads"], cfg["mlp_dim"]) == (32, 2, 4, 64)
  assert cfg["causal"] and cfg["norm_position"] == "pre" and cfg["tie_embeddings"]
  assert cfg["activation"] == "gelu_tanh" and cfg["layer_norm_eps"] == 1e-5
  model, params, ref = gpt2_fixture
  out = _gpt2_out(model, params, ref["input_ids"], ref["attention_mask"])
  _close(out, {k: ref[k] for k in ("hidden", "lm_logits")}, ref["attention_mask"])


def test_vit_fixture_matches_transformers(vit_fixture):
  cfg = interop.model_config_from_pretrained(VIT_DIR)
  assert (cfg["image_size"], cfg["patch_size"], cfg["channels"]) == (16, 4, 3)
  assert cfg["num_classes"] == 5 and cfg["activation"] == "gelu"
  # preprocessor_config.json's normalisation moves into the model.
  assert cfg["pixel_mean"] == mk.PIXEL_MEAN and cfg["pixel_std"] == mk.PIXEL_STD
  model, params, ref = vit_fixture
  _close(_vit_out(model, params, ref["image"]), {k: ref[k] for k in ("hidden", "logits")})


@pytest.mark.parametrize("family", ["gpt2", "vit"])
def test_fixture_scan_layers_gives_the_same_outputs(family, request):
  model, params, ref = request.getfixturevalue(f"{family}_fixture")
  path = GPT2_DIR if family == "gpt2" else VIT_DIR
  scanned_model, scanned = interop.load_pretrained(path, scan_layers=True)
  fc1 = scanned["encoder"]["blocks"]["mlp"]["fc1"]["kernel"]
  assert fc1.shape == (2, 32, 64)
  np.testing.assert_array_equal(fc1[1], params["encoder"]["block_1"]["mlp"]["fc1"]["kernel"])
  if family == "gpt2":
    ids, mask = ref["input_ids"], ref["attention_mask"]
    _close(_gpt2_out(scanned_model, scanned, ids, mask), _gpt2_out(model, params, ids, mask),
           mask, atol=1e-5)
  else:
    _close(_vit_out(scanned_model, scanned, ref["image"]),
           _vit_out(model, params, ref["image"]), atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "vit"])
def test_fixture_export_round_trip(family, request, tmp_path):
  _, params, _ = request.getfixturevalue(f"{family}_fixture")
  src = GPT2_DIR if family == "gpt2" else VIT_DIR
  cfg = interop.model_config_from_pretrained(src)
  out = interop.save_pretrained(str(tmp_path / "export"), cfg, params)
  # The tensors transformers wrote, under the same names (GPT2LMHeadModel: 'transformer.'
  # prefix, no tied lm_head; ViTForImageClassification: 'vit.' + 'classifier.'), widened
  # exactly from bfloat16/float16 to float32.
  source, exported = interop.read_tensors(src), interop.read_tensors(out)
  assert sorted(exported) == sorted(source)
  for name, x in source.items():
    assert exported[name].dtype == np.float32
    np.testing.assert_array_equal(exported[name], np.asarray(x, np.float32), err_msg=name)
  assert interop.model_config_from_pretrained(out) == cfg
  _assert_same_params(_round_trip(out, cfg, params), params)
  hf_cfg = interop.read_config(out)
  if family == "vit":
    assert hf_cfg["architectures"] == ["ViTForImageClassification"]
    with open(os.path.join(out, "preprocessor_config.json")) as f:
      proc = json.load(f)
    assert proc["image_processor_type"] == "ViTImageProcessor" and proc["do_normalize"]
    assert proc["image_mean"] == list(mk.PIXEL_MEAN) and proc["image_std"] == list(mk.PIXEL_STD)
    assert proc["size"] == {"height": 16, "width": 16}
  else:
    assert hf_cfg["architectures"] == ["GPT2LMHeadModel"] and hf_cfg["tie_word_embeddings"]
    assert not os.path.exists(os.path.join(out, "preprocessor_config.json"))


def test_bert_mlm_fixture_matches_transformers_and_round_trips(tmp_path):
  """BertForMaskedLM: the MLM head (Dense -> GELU -> LayerNorm -> tied decoder + bias)
  is imported, so masked-token logits equal transformers'; the export writes the same
  tensors (decoder weight and bias are tied copies transformers restores itself)."""
  cfg = interop.model_config_from_pretrained(BERT_MLM_DIR)
  assert cfg["lm_head"] and cfg["lm_transform"] and cfg["norm_position"] == "post"
  model, params = interop.load_pretrained(BERT_MLM_DIR)
  ref = np.load(BERT_MLM_DIR + ".npz")
  out = _apply(model)(params, {"text": ref["input_ids"], "text_mask": ref["attention_mask"]})
  got = {k: np.asarray(out[k]) for k in ("hidden", "lm_logits")}
  _close(got, {k: ref[k] for k in ("hidden", "lm_logits")}, ref["attention_mask"])
  exported = interop.save_pretrained(str(tmp_path / "export"), cfg, params)
  assert interop.read_config(exported)["architectures"] == ["BertForMaskedLM"]
  source = interop.read_tensors(BERT_MLM_DIR)
  written = interop.read_tensors(exported)
  tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
  assert sorted(written) == sorted(k for k in source if k not in tied
                                   and not k.endswith("position_ids"))
  for name, x in written.items():
    np.testing.assert_array_equal(x, source[name], err_msg=name)
  _assert_same_params(_round_trip(exported, cfg, params), params)


def test_gpt2_export_refuses_a_classification_head(gpt2_fixture, tmp_path, caplog):
  _, params, _ = gpt2_fixture
  cfg = {**interop.model_config_from_pretrained(GPT2_DIR), "num_classes": 3}
  with_head = {**params, "head": {"kernel": np.ones((32, 3), np.float32),
                                  "bias": np.zeros(3, np.float32)}}
  with pytest.raises(ConfigError, match="num_classes=0"):
    interop.save_pretrained(str(tmp_path / "refused"), cfg, with_head)
  assert not (tmp_path / "refused").exists()   # refused before anything is written
  # The documented way out: the language model alone; the head is named in a warning.
  out = interop.save_pretrained(str(tmp_path / "lm"), {**cfg, "num_classes": 0}, with_head)
  assert "head/kernel" in caplog.text
  _assert_same_params(_round_trip(out, {**cfg, "num_classes": 0}, params), params)


# ---- Error cases: one clear error each, and the folder left untouched ----
def _snapshot(path: str) -> dict:
  """{relative file: (sha256, mtime_ns)} of every file under `path`."""
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      with open(full, "rb") as f:
        out[os.path.relpath(full, path)] = (hashlib.sha256(f.read()).hexdigest(),
                                            os.stat(full).st_mtime_ns)
  return out


def _edit_config(**changes):
  def edit(path):
    cfg = interop.read_config(path)
    cfg.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
      del cfg[key]
    with open(os.path.join(path, "config.json"), "w") as f:
      json.dump(cfg, f)
  return edit


def _remove(name):
  return lambda path: os.remove(os.path.join(path, name))


def _torch_only(path):
  os.remove(os.path.join(path, "model.safetensors"))
  open(os.path.join(path, "pytorch_model.bin"), "wb").close()


def _drop_tensor(path):
  from safetensors import numpy as st   # pylint: disable=import-outside-toplevel
  tensors = interop.read_tensors(path)
  del tensors["transformer.h.1.mlp.c_fc.weight"]
  st.save_file({k: np.asarray(v, np.float32) for k, v in tensors.items()},
               os.path.join(path, "model.safetensors"))


def _garbage(path):
  with open(os.path.join(path, "model.safetensors"), "wb") as f:
    f.write(np.random.default_rng(0).bytes(4096))


def _truncate(path):
  file = os.path.join(path, "model.safetensors")
  with open(file, "rb") as f:
    data = f.read()
  with open(file, "wb") as f:
    f.write(data[:len(data) // 2])


def _broken_json(path):
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write('{"model_type": "gpt2", ')


ERROR_CASES = {
    "no_config_json": (_remove("config.json"), {}, ConfigError, "no config.json"),
    "config_json_not_json": (_broken_json, {}, ConfigError, "as JSON"),
    "unknown_model_type": (_edit_config(model_type="llama"), {}, ConfigError,
                           "model_type='llama'"),
    "config_json_lacks_a_key": (_edit_config(n_embd=None), {}, ConfigError,
                                "lacks 'n_embd'"),
    "no_safetensors": (_remove("model.safetensors"), {}, CheckpointError,
                       "has no model.safetensors"),
    "pytorch_model_bin_only": (_torch_only, {}, CheckpointError,
                               "pytorch_model.bin: convert it"),
    "missing_tensor": (_drop_tensor, {}, CheckpointError,
                       "no tensor 'h.1.mlp.c_fc.weight'"),
    "corrupt_safetensors": (_garbage, {}, CheckpointError, "damaged"),
    "truncated_safetensors": (_truncate, {}, CheckpointError, "truncated"),
    "width_override": (None, {"width": 64}, CheckpointError, "cannot fill parameter"),
    "unknown_override": (None, {"widht": 64}, ConfigError,
                         r"Unknown model override\(s\) \['widht'\]"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_broken_folders_and_overrides_fail_clearly(case, tmp_path):
  damage, overrides, error, match = ERROR_CASES[case]
  path = str(tmp_path / "gpt2")
  shutil.copytree(GPT2_DIR, path)
  if damage:
    damage(path)
  before = _snapshot(path)
  with pytest.raises(error, match=match):
    interop.load_pretrained(path, **overrides)
  assert _snapshot(path) == before   # a failed load modifies nothing


def test_unknown_model_type_names_the_supported_ones(tmp_path):
  path = str(tmp_path / "vit")
  shutil.copytree(VIT_DIR, path)
  _edit_config(model_type="swin")(path)
  with pytest.raises(ConfigError, match="bert, gpt2, vit"):
    interop.model_config_from_pretrained(path)


# ---- Live: transformers models built, compared and reloaded at test time ----
@pytest.fixture(scope="module")
def live_gpt2(tmp_path_factory):
  _hf()
  path = str(tmp_path_factory.mktemp("hf_gpt2"))
  hf = mk.gpt2(mk.GPT2_LIVE, seed=10)
  hf.save_pretrained(path, safe_serialization=True)
  ids, mask = mk.text_inputs(mk.GPT2_LIVE["vocab_size"], length=16, real=11)
  model, params = interop.load_pretrained(path)
  return types.SimpleNamespace(path=path, ids=ids, mask=mask, model=model, params=params,
                               ref=mk.gpt2_outputs(hf, ids, mask))


def test_live_gpt2_matches_transformers(live_gpt2):
  g = live_gpt2
  out = _gpt2_out(g.model, g.params, g.ids, g.mask)
  _close(out, g.ref, g.mask)
  # Right padding of a causal model cannot change real tokens' outputs, so the match
  # above would hold with the mask ignored: check that masking a real token matters.
  masked = g.mask.copy()
  masked[0, 3] = 0
  assert np.abs(_gpt2_out(g.model, g.params, g.ids, masked)["hidden"][0, 5:]
                - out["hidden"][0, 5:]).max() > 1e-2


def test_live_gpt2_scan_layers(live_gpt2):
  g = live_gpt2
  model, params = interop.load_pretrained(g.path, scan_layers=True)
  _close(_gpt2_out(model, params, g.ids, g.mask), g.ref, g.mask)


def test_live_gpt2_export_reloads_in_transformers(live_gpt2, tmp_path):
  _, transformers = _hf()
  g = live_gpt2
  cfg = interop.model_config_from_pretrained(g.path)
  out = interop.save_pretrained(str(tmp_path / "export"), cfg, g.params)
  hf, info = transformers.GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
  assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
  _close(mk.gpt2_outputs(hf.eval(), g.ids, g.mask), g.ref, g.mask)
  _assert_same_params(_round_trip(out, cfg, g.params), g.params)


def test_live_gpt2_untied_read_out(tmp_path):
  _, transformers = _hf()
  path = str(tmp_path / "untied")
  hf = mk.gpt2(mk.GPT2_LIVE, seed=11, tie_word_embeddings=False)
  hf.save_pretrained(path, safe_serialization=True)
  ids, mask = mk.text_inputs(mk.GPT2_LIVE["vocab_size"])
  model, params = interop.load_pretrained(path)
  assert "lm_out" in params
  ref = mk.gpt2_outputs(hf, ids, mask)
  _close(_gpt2_out(model, params, ids, mask), ref, mask)
  out = interop.save_pretrained(str(tmp_path / "export"),
                                interop.model_config_from_pretrained(path), params)
  back, info = transformers.GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
  assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
  _close(mk.gpt2_outputs(back.eval(), ids, mask), ref, mask)


@pytest.fixture(scope="module", params=[False, True], ids=["ViTModel", "ViTClassifier"])
def live_vit(request, tmp_path_factory):
  _hf()
  classifier = request.param
  path = str(tmp_path_factory.mktemp("hf_vit"))
  hf = mk.vit(mk.VIT_LIVE, seed=20 + classifier, classifier=classifier)
  hf.save_pretrained(path, safe_serialization=True)
  mk.write_vit_preprocessor(path, mk.VIT_LIVE["image_size"])
  image, pixels = mk.image_inputs(mk.VIT_LIVE["image_size"])
  model, params = interop.load_pretrained(path)
  return types.SimpleNamespace(path=path, classifier=classifier, image=image, model=model,
                               params=params, ref=mk.vit_outputs(hf, pixels))


def test_live_vit_matches_transformers(live_vit):
  v = live_vit
  assert sorted(v.ref) == (["hidden", "logits"] if v.classifier else ["hidden"])
  _close(_vit_out(v.model, v.params, v.image), v.ref)


def test_live_vit_scan_layers(live_vit):
  v = live_vit
  model, params = interop.load_pretrained(v.path, scan_layers=True)
  _close(_vit_out(model, params, v.image), v.ref)


def test_live_vit_export_reloads_in_transformers(live_vit, tmp_path):
  _, transformers = _hf()
  v = live_vit
  cfg = interop.model_config_from_pretrained(v.path)
  out = interop.save_pretrained(str(tmp_path / "export"), cfg, v.params)
  cls = (transformers.ViTForImageClassification if v.classifier else transformers.ViTModel)
  hf, info = cls.from_pretrained(out, output_loading_info=True)
  # Documented gap: mmjax's ViT has no pooler, so an exported ViTModel lacks it.
  allowed = set() if v.classifier else {"pooler.dense.weight", "pooler.dense.bias"}
  assert set(info["missing_keys"]) == allowed
  assert not (info["unexpected_keys"] or info["mismatched_keys"])
  # transformers' own preprocessing of the exported folder: uint8 images -> the same
  # outputs as mmjax's ViT on image / 255 (the normalisation travelled with the export).
  proc = transformers.AutoImageProcessor.from_pretrained(out)
  assert list(proc.image_mean) == list(mk.PIXEL_MEAN)
  assert list(proc.image_std) == list(mk.PIXEL_STD)
  uint8 = np.round(v.image * 255).astype(np.uint8)
  pixels = proc(list(uint8), do_resize=False, return_tensors="np",
                input_data_format="channels_last")["pixel_values"]
  want = _vit_out(v.model, v.params, uint8.astype(np.float32) / 255)
  _close(mk.vit_outputs(hf.eval(), pixels.astype(np.float32)), want)
  _assert_same_params(_round_trip(out, cfg, v.params), v.params)


def test_live_bert_mlm_matches_and_export_reloads_in_transformers(tmp_path):
  """A random BertForMaskedLM: masked-token logits equal transformers'; the export loads
  into BertForMaskedLM with no missing or unexpected keys and the same logits."""
  torch, transformers = _hf()
  hf = mk.bert_mlm(dict(mk.BERT_MLM_FIXTURE, hidden_size=32, num_attention_heads=4))
  src = str(tmp_path / "src")
  hf.save_pretrained(src, safe_serialization=True)
  ids, mask = mk.text_inputs(mk.BERT_MLM_FIXTURE["vocab_size"])
  t_ids, t_mask = torch.tensor(ids).long(), torch.tensor(mask).long()
  with torch.no_grad():
    ref = hf(input_ids=t_ids, attention_mask=t_mask).logits.numpy()
  model, params = interop.load_pretrained(src)
  got = np.asarray(_apply(model)(params, {"text": ids, "text_mask": mask})["lm_logits"])
  _close({"lm_logits": got}, {"lm_logits": ref}, mask)
  out = interop.save_pretrained(str(tmp_path / "export"),
                                interop.model_config_from_pretrained(src), params)
  back, info = transformers.BertForMaskedLM.from_pretrained(out, output_loading_info=True)
  assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
  with torch.no_grad():
    again = back.eval()(input_ids=t_ids, attention_mask=t_mask).logits.numpy()
  np.testing.assert_allclose(again, ref, atol=1e-6)
