"""Writes the recorded GPT-2 and ViT fixtures of tests/interop/test_hf_families.py, and
holds the tiny randomly initialised Hugging Face models its live tests build.

How the recorded values were produced (CPU, float32 compute):
  pip install transformers==5.24.0 torch==2.15.0 safetensors==0.8.0 numpy==2.4.6
  (recorded with the torch 2.15.0+cu132 build, run on CPU; jax is not involved)
  python tests/interop/make_family_fixtures.py
It writes, under tests/interop/fixtures/:
- gpt2_tiny/: `transformers.GPT2LMHeadModel(GPT2Config(**GPT2_FIXTURE))` with every
  parameter redrawn by `randomize` (seed 0), saved with `save_pretrained(dir,
  safe_serialization=True)` in bfloat16 (config.json, generation_config.json,
  model.safetensors: BF16 tensors, so the tests also cover the bfloat16 reader);
- vit_tiny/: `transformers.ViTForImageClassification(ViTConfig(**VIT_FIXTURE))`,
  redrawn by `randomize` (seed 1), saved in float16, plus the preprocessor_config.json
  of `ViTImageProcessor(image_mean=PIXEL_MEAN, image_std=PIXEL_STD, size=16x16)`;
- gpt2_tiny.npz / vit_tiny.npz: the inputs and transformers' outputs, computed by the
  folder reloaded with `from_pretrained(dir, dtype=torch.float32)` (the stored, rounded
  weights, in float32), in eval mode:
    GPT-2: input_ids / attention_mask [2, 12] (row 1 right-padded after 8 tokens);
           hidden = model.transformer(...).last_hidden_state [2, 12, 32] (after ln_f),
           lm_logits = model(...).logits [2, 12, 64];
    ViT:   image [2, 16, 16, 3] uniform in [0, 1] (mmjax's input, NHWC) and
           pixel_values = ((image - PIXEL_MEAN) / PIXEL_STD) as NCHW (transformers' input,
           what ViTImageProcessor makes of image * 255 without resizing);
           hidden = model.vit(pixel_values).last_hidden_state [2, 17, 32],
           logits = model(pixel_values).logits [2, 5].
  `versions` in each .npz records the packages used.
- bert_mlm_tiny/ + bert_mlm_tiny.npz: `transformers.BertForMaskedLM(BertConfig(
  **BERT_MLM_FIXTURE))` redrawn by `randomize` (seed 2), saved in float32; the inputs as
  for GPT-2 and `hidden` = model.bert(...).last_hidden_state [2, 12, 16], `lm_logits` =
  model(...).logits [2, 12, 48] (the MLM head: transform + tied decoder + bias). Written
  by `python tests/interop/make_family_fixtures.py bert_mlm` (2026-11-25, same versions).
The tests need neither torch nor transformers to read these files.
"""
import json
import os

import numpy as np

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
PIXEL_MEAN = (0.5, 0.4, 0.3)
PIXEL_STD = (0.2, 0.25, 0.3)
# Recorded fixtures: small enough for git (each folder < 50 KB).
# bos/eos inside the tiny vocabularies (GPT-2's 50256 would draw config warnings).
GPT2_FIXTURE = dict(n_embd=32, n_layer=2, n_head=4, n_inner=64, vocab_size=64,
                    n_positions=16, bos_token_id=63, eos_token_id=63)
VIT_FIXTURE = dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                   num_attention_heads=4, intermediate_size=64, num_channels=3,
                   num_labels=5)
# Live tests (built at test time when transformers is installed).
GPT2_LIVE = dict(n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=32,
                 bos_token_id=99, eos_token_id=99)
VIT_LIVE = dict(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=128, num_channels=3,
                num_labels=5)


BERT_MLM_FIXTURE = dict(vocab_size=48, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=16)


def randomize(model, seed: int, scale: float = 0.1):
  """Redraws every parameter of torch `model` from N(0, scale) (LayerNorm scales from
  N(1, scale)), in place, and returns it in eval mode. transformers initialises biases
  and LayerNorms to 0 and 1: a swapped or dropped bias / LayerNorm would go unnoticed."""
  import torch   # pylint: disable=import-outside-toplevel
  gen = torch.Generator().manual_seed(seed)
  ln_scales = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
  with torch.no_grad():
    for _, p in sorted(model.named_parameters()):   # sorted: independent of module order
      noise = torch.randn(p.shape, generator=gen) * scale
      p.copy_(noise + 1.0 if id(p) in ln_scales else noise)
  return model.eval()


def gpt2(config: dict, seed: int = 0, **extra):
  """A randomized transformers GPT2LMHeadModel."""
  import transformers   # pylint: disable=import-outside-toplevel
  return randomize(transformers.GPT2LMHeadModel(transformers.GPT2Config(**config, **extra)),
                   seed)


def vit(config: dict, seed: int = 1, classifier: bool = True):
  """A randomized transformers ViTForImageClassification (or ViTModel, with pooler)."""
  import transformers   # pylint: disable=import-outside-toplevel
  cls = transformers.ViTForImageClassification if classifier else transformers.ViTModel
  return randomize(cls(transformers.ViTConfig(**config)), seed)


def text_inputs(vocab: int, batch: int = 2, length: int = 12, real: int = 8):
  """(ids [B,T] int32, mask [B,T] int32): the last row right-padded after `real`."""
  ids = np.random.default_rng(2).integers(0, vocab, (batch, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[-1, real:] = 0
  return ids, mask


def image_inputs(size: int, channels: int = 3, batch: int = 2):
  """(image [B,H,W,C] in [0,1] for mmjax, pixel_values [B,C,H,W] for transformers)."""
  image = np.random.default_rng(3).random((batch, size, size, channels), dtype=np.float32)
  pixels = (image - np.float32(PIXEL_MEAN)) / np.float32(PIXEL_STD)
  return image, np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).astype(np.float32)


def gpt2_outputs(model, ids, mask) -> dict:
  """transformers GPT-2 -> {'hidden': last_hidden_state, 'lm_logits': logits}."""
  import torch   # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    kw = dict(input_ids=torch.tensor(ids, dtype=torch.long),
              attention_mask=torch.tensor(mask, dtype=torch.long))
    hidden = model.transformer(**kw).last_hidden_state.numpy()
    logits = model(**kw).logits.numpy()
  return {"hidden": hidden, "lm_logits": logits}


def vit_outputs(model, pixels) -> dict:
  """transformers ViT -> {'hidden': last_hidden_state, 'logits'?: classifier logits}."""
  import torch   # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    x = torch.tensor(pixels)
    base = getattr(model, "vit", model)
    out = {"hidden": base(pixel_values=x).last_hidden_state.numpy()}
    if base is not model:
      out["logits"] = model(pixel_values=x).logits.numpy()
  return out


def write_vit_preprocessor(path: str, size: int) -> None:
  """ViTImageProcessor's preprocessor_config.json with PIXEL_MEAN / PIXEL_STD."""
  import transformers   # pylint: disable=import-outside-toplevel
  transformers.ViTImageProcessor(image_mean=list(PIXEL_MEAN), image_std=list(PIXEL_STD),
                                 size={"height": size, "width": size}).save_pretrained(path)


def _versions() -> np.ndarray:
  import safetensors   # pylint: disable=import-outside-toplevel
  import torch   # pylint: disable=import-outside-toplevel
  import transformers   # pylint: disable=import-outside-toplevel
  return np.array([f"transformers=={transformers.__version__}",
                   f"torch=={torch.__version__}", f"safetensors=={safetensors.__version__}",
                   f"numpy=={np.__version__}"])


def _size(path: str) -> int:
  return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def bert_mlm(config: dict, seed: int = 2):
  """A randomized transformers BertForMaskedLM."""
  import transformers   # pylint: disable=import-outside-toplevel
  return randomize(transformers.BertForMaskedLM(transformers.BertConfig(**config)), seed)


def write_bert_mlm() -> None:
  import torch   # pylint: disable=import-outside-toplevel
  folder = os.path.join(FIXTURES, "bert_mlm_tiny")
  model = bert_mlm(BERT_MLM_FIXTURE)
  model.save_pretrained(folder, safe_serialization=True)
  ids, mask = text_inputs(BERT_MLM_FIXTURE["vocab_size"])
  t_ids, t_mask = torch.tensor(ids).long(), torch.tensor(mask).long()
  with torch.no_grad():
    hidden = model.bert(input_ids=t_ids, attention_mask=t_mask).last_hidden_state
    logits = model(input_ids=t_ids, attention_mask=t_mask).logits
  np.savez_compressed(os.path.join(FIXTURES, "bert_mlm_tiny.npz"), input_ids=ids,
                      attention_mask=mask, versions=_versions(), hidden=hidden.numpy(),
                      lm_logits=logits.numpy())
  print("wrote", folder, _size(folder), "bytes")


def main():
  import sys   # pylint: disable=import-outside-toplevel
  import torch   # pylint: disable=import-outside-toplevel
  import transformers   # pylint: disable=import-outside-toplevel
  os.makedirs(FIXTURES, exist_ok=True)
  if sys.argv[1:] == ["bert_mlm"]:
    write_bert_mlm()
    return

  folder = os.path.join(FIXTURES, "gpt2_tiny")
  gpt2(GPT2_FIXTURE, seed=0).to(torch.bfloat16).save_pretrained(folder,
                                                                safe_serialization=True)
  model = transformers.GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32).eval()
  ids, mask = text_inputs(GPT2_FIXTURE["vocab_size"])
  np.savez_compressed(os.path.join(FIXTURES, "gpt2_tiny.npz"), input_ids=ids,
                      attention_mask=mask, versions=_versions(),
                      **gpt2_outputs(model, ids, mask))
  print("wrote", folder, _size(folder), "bytes")

  folder = os.path.join(FIXTURES, "vit_tiny")
  vit(VIT_FIXTURE, seed=1).to(torch.float16).save_pretrained(folder, safe_serialization=True)
  write_vit_preprocessor(folder, VIT_FIXTURE["image_size"])
  model = transformers.ViTForImageClassification.from_pretrained(
      folder, dtype=torch.float32).eval()
  image, pixels = image_inputs(VIT_FIXTURE["image_size"])
  np.savez_compressed(os.path.join(FIXTURES, "vit_tiny.npz"), image=image,
                      pixel_values=pixels, versions=_versions(), **vit_outputs(model, pixels))
  print("wrote", folder, _size(folder), "bytes")
  with open(os.path.join(folder, "config.json")) as f:
    assert json.load(f)["model_type"] == "vit"
  write_bert_mlm()


if __name__ == "__main__":
  main()
