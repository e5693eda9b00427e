"""Hugging Face model families: config.json <-> config.model, and weight-name rules.

Each family maps a Hugging Face `config.json` to an mmjax `config.model` dict (and back,
for export) and lists `Rule`s tying each safetensors tensor to the mmjax parameter(s) it
holds. Supported: BERT and the BERT family that shares its layout (MiniLM, the
sentence-transformers encoders), GPT-2, ViT. Block parameters use the unscanned layout
(`encoder/block_{i}`); `mmjax.interop.weights` stacks them for scan_layers=True.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from mmjax.errors import ConfigError

# Hugging Face `hidden_act` / `activation_function` -> mmjax activation.
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "gelu_fast": "gelu_tanh", "relu": "relu"}
_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


@dataclasses.dataclass(frozen=True)
class Rule:
  """One safetensors tensor <-> one or more mmjax parameters.

  layout: 'copy' (same values; reshaped to the parameter's shape), 'linear' (torch
  nn.Linear [out, in], transposed), 'conv1d' (GPT-2's Conv1D [in, out]), 'conv' (torch
  OIHW -> flax HWIO), 'unbatch' (a leading 1 dim dropped, e.g. ViT's [1, N, D] position
  table). Several `paths` split the tensor's output axis equally (GPT-2's fused qkv).
  `in_dims`: how many leading dims of the mmjax kernel are its inputs (2 for the
  attention output's heads x head_dim).
  """
  hf: str
  paths: tuple[str, ...]
  layout: str = "copy"
  in_dims: int = 1


@dataclasses.dataclass(frozen=True)
class Family:
  """How one Hugging Face `model_type` maps onto mmjax.

  Export: `hf_config` names the architecture; one other than `base_arch` (a task model:
  an LM or classifier wrapper) stores its base-model tensors under `prefixes[0]` and its
  own head tensors (`head_keys`) at the top level, as transformers' save_pretrained does.
  """
  model_type: str
  prefixes: tuple[str, ...]        # stripped from safetensors keys (task-model wrappers)
  ignored: tuple[str, ...]          # key suffixes that are buffers, not weights
  model_config: Callable[[dict, dict], dict]   # (config.json, extra files) -> config.model
  hf_config: Callable[[dict], dict]            # config.model -> config.json
  rules: Callable[[dict], list[Rule]]          # config.model -> rules
  base_arch: str = ""                          # the architecture without a task head
  head_keys: tuple[str, ...] = ("classifier.",)   # top-level tensors of a task model
  # config.model -> preprocessor_config.json, for families whose inputs are preprocessed.
  preprocessor: Callable[[dict], dict] | None = None


def _get(cfg: dict, *keys: str, default: Any = None) -> Any:
  for k in keys:
    if cfg.get(k) is not None:
      return cfg[k]
  return default


def _req(cfg: dict, *keys: str) -> Any:
  """The first of `keys` that config.json sets; a KeyError naming the first one else
  (`pretrained` turns it into a ConfigError)."""
  value = _get(cfg, *keys)
  if value is None:
    raise KeyError(keys[0])
  return value


def _square(value: Any, key: str) -> int:
  """An int or an [h, w] pair of equal sides (mmjax's ViT is square) -> int."""
  if isinstance(value, (list, tuple)):
    if len(value) != 2 or value[0] != value[1]:
      raise ConfigError(f"config.json's {key}={value!r} is not square; mmjax's ViT takes "
                        "square images and patches.")
    value = value[0]
  return int(value)


def _labels(hf: dict, num_classes: int) -> dict:
  """config.json entries of a classifier with `num_classes` outputs (generic names)."""
  hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_classes)}
  hf["label2id"] = {f"LABEL_{i}": i for i in range(num_classes)}
  return hf


def _refuse(m: dict, family: str, checks: dict[str, tuple[Any, str]]) -> None:
  """ConfigError when a config.model field has a value `family` has no form for.
  checks: field -> (the only exportable value, why)."""
  for key, (want, why) in checks.items():
    if m.get(key, want) != want:
      raise ConfigError(f"Cannot export config.model.{key}={m[key]!r} as {family}: {why}. "
                        "Save an mmjax checkpoint instead.")


def _activation(name: str, key: str) -> str:
  if name not in _ACTIVATIONS:
    raise ConfigError(f"config.json's {key}={name!r} has no mmjax equivalent; supported: "
                      f"{', '.join(_ACTIVATIONS)}.")
  return _ACTIVATIONS[name]


def _linear(hf: str, path: str, bias: bool = True, in_dims: int = 1,
            layout: str = "linear") -> list[Rule]:
  rules = [Rule(f"{hf}.weight", (f"{path}/kernel",), layout, in_dims)]
  return rules + ([Rule(f"{hf}.bias", (f"{path}/bias",))] if bias else [])


def _norm(hf: str, path: str) -> list[Rule]:
  return [Rule(f"{hf}.weight", (f"{path}/scale",)), Rule(f"{hf}.bias", (f"{path}/bias",))]


def _block_rules(hf: str, path: str, names: dict[str, str]) -> list[Rule]:
  """The attention + MLP + 2 LayerNorms of one BERT/ViT-layout layer (nn.Linear)."""
  rules = []
  for proj in ("query", "key", "value"):
    rules += _linear(f"{hf}.{names['attn']}.{proj}", f"{path}/attn/{proj}")
  rules += _linear(f"{hf}.{names['attn_out']}", f"{path}/attn/out", in_dims=2)
  rules += _linear(f"{hf}.{names['fc1']}", f"{path}/mlp/fc1")
  rules += _linear(f"{hf}.{names['fc2']}", f"{path}/mlp/fc2")
  rules += _norm(f"{hf}.{names['ln_attn']}", f"{path}/ln_attn")
  rules += _norm(f"{hf}.{names['ln_mlp']}", f"{path}/ln_mlp")
  return rules


# ---- BERT (and MiniLM, sentence-transformers encoders) ----
_BERT_LAYER = dict(attn="attention.self", attn_out="attention.output.dense",
                   fc1="intermediate.dense", fc2="output.dense",
                   ln_attn="attention.output.LayerNorm", ln_mlp="output.LayerNorm")


def _bert_model_config(cfg: dict, extra: dict) -> dict:
  if _get(cfg, "position_embedding_type", default="absolute") != "absolute":
    raise ConfigError("Only absolute position embeddings are supported for BERT imports; "
                      f"config.json has {cfg['position_embedding_type']!r}.")
  return dict(
      name="text_transformer", vocab_size=cfg["vocab_size"],
      max_len=cfg["max_position_embeddings"], width=cfg["hidden_size"],
      depth=cfg["num_hidden_layers"], num_heads=cfg["num_attention_heads"],
      mlp_dim=cfg["intermediate_size"], dropout=float(_get(cfg, "hidden_dropout_prob",
                                                           default=0.1)),
      causal=False, pool="first", lm_head=bool(extra.get("has_mlm_head", False)),
      lm_transform=bool(extra.get("has_mlm_head", False)), norm_position="post",
      layer_norm_eps=float(_get(cfg, "layer_norm_eps", default=1e-12)),
      activation=_activation(_get(cfg, "hidden_act", default="gelu"), "hidden_act"),
      type_vocab_size=int(_get(cfg, "type_vocab_size", default=2)), embed_norm=True,
      pooler=bool(extra.get("has_pooler", False)),
      num_classes=int(extra.get("num_labels", 0)))


def _bert_hf_config(m: dict) -> dict:
  hf = dict(architectures=["BertModel"], model_type="bert", vocab_size=m["vocab_size"],
            max_position_embeddings=m["max_len"], hidden_size=m["width"],
            num_hidden_layers=m["depth"], num_attention_heads=m["num_heads"],
            intermediate_size=m["mlp_dim"], hidden_dropout_prob=m.get("dropout", 0.1),
            attention_probs_dropout_prob=m.get("dropout", 0.1),
            layer_norm_eps=m["layer_norm_eps"], hidden_act=_HF_ACTIVATIONS[m["activation"]],
            type_vocab_size=m["type_vocab_size"], position_embedding_type="absolute",
            pad_token_id=0)
  if m.get("num_classes"):
    hf["architectures"] = ["BertForSequenceClassification"]
    _labels(hf, m["num_classes"])
  elif m.get("lm_head") and m.get("lm_transform"):
    hf["architectures"] = ["BertForMaskedLM"]
  return hf


def _bert_rules(m: dict) -> list[Rule]:
  rules = [Rule("embeddings.word_embeddings.weight", ("token_embed/embedding",)),
           Rule("embeddings.position_embeddings.weight", ("pos_embed/embedding",)),
           Rule("embeddings.token_type_embeddings.weight", ("type_embed/embedding",))]
  rules += _norm("embeddings.LayerNorm", "embed_ln")
  for i in range(m["depth"]):
    rules += _block_rules(f"encoder.layer.{i}", f"encoder/block_{i}", _BERT_LAYER)
  if m.get("pooler"):
    rules += _linear("pooler.dense", "pooler_dense")
  if m.get("lm_head") and m.get("lm_transform"):
    # The MLM head; its decoder weight is the word-embedding table (tied), not read.
    rules += _linear("cls.predictions.transform.dense", "lm_dense")
    rules += _norm("cls.predictions.transform.LayerNorm", "lm_ln")
    rules += [Rule("cls.predictions.bias", ("lm_bias",))]
  if m.get("num_classes"):
    rules += _linear("classifier", "head")
  return rules


# ---- GPT-2 ----
def _gpt2_model_config(cfg: dict, extra: dict) -> dict:
  del extra
  # Attention variants mmjax's MultiHeadAttention (scores / sqrt(head_dim)) cannot express.
  if not _get(cfg, "scale_attn_weights", default=True):
    raise ConfigError("config.json has scale_attn_weights=false; mmjax's attention always "
                      "scales scores by 1/sqrt(head_dim), so the import would differ.")
  if _get(cfg, "scale_attn_by_inverse_layer_idx", default=False):
    raise ConfigError("config.json has scale_attn_by_inverse_layer_idx=true (per-layer "
                      "score scaling), which mmjax's attention does not implement.")
  width = _req(cfg, "n_embd")
  return dict(
      name="text_transformer", vocab_size=_req(cfg, "vocab_size"),
      max_len=_req(cfg, "n_positions", "n_ctx"), width=width, depth=_req(cfg, "n_layer"),
      num_heads=_req(cfg, "n_head"), mlp_dim=_get(cfg, "n_inner", default=4 * width),
      dropout=float(_get(cfg, "resid_pdrop", default=0.1)), causal=True, pool="last",
      lm_head=True, tie_embeddings=bool(_get(cfg, "tie_word_embeddings", default=True)),
      norm_position="pre", layer_norm_eps=float(_get(cfg, "layer_norm_epsilon",
                                                     default=1e-5)),
      activation=_activation(_get(cfg, "activation_function", default="gelu_new"),
                             "activation_function"))


def _gpt2_hf_config(m: dict) -> dict:
  _refuse(m, "GPT-2", {
      "norm_position": ("pre", "GPT-2's blocks are pre-LN"),
      "type_vocab_size": (0, "GPT-2 has no token-type embeddings"),
      "embed_norm": (False, "GPT-2 has no LayerNorm after its embeddings"),
      "pooler": (False, "GPT-2 has no pooler"),
      "lm_transform": (False, "GPT-2's read-out has no MLM transform"),
      # GPT2ForSequenceClassification reads the last non-padding token (found through
      # pad_token_id) with a bias-free `score` layer; mmjax's head has a bias.
      "num_classes": (0, "Hugging Face's GPT2ForSequenceClassification has a bias-free "
                         "`score` layer that mmjax's head (with bias) does not match; "
                         "export with num_classes=0 to write the language model alone"),
      "token_classes": (0, "GPT-2 token-classification heads are not exported; export "
                           "with token_classes=0 to write the language model alone")})
  dropout = m.get("dropout", 0.1)
  return dict(architectures=["GPT2LMHeadModel" if m.get("lm_head", True) else "GPT2Model"],
              model_type="gpt2", vocab_size=m["vocab_size"], n_positions=m["max_len"],
              n_embd=m["width"], n_layer=m["depth"], n_head=m["num_heads"],
              n_inner=m["mlp_dim"], resid_pdrop=dropout, embd_pdrop=dropout,
              attn_pdrop=dropout, layer_norm_epsilon=m["layer_norm_eps"],
              activation_function=_HF_ACTIVATIONS[m["activation"]],
              scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
              tie_word_embeddings=bool(m.get("tie_embeddings", True)),
              # GPT-2's <|endoftext|> is the last id (50256 of 50257); transformers'
              # default 50256 lies outside smaller vocabularies and draws a warning.
              bos_token_id=m["vocab_size"] - 1, eos_token_id=m["vocab_size"] - 1)


def _gpt2_rules(m: dict) -> list[Rule]:
  rules = [Rule("wte.weight", ("token_embed/embedding",)),
           Rule("wpe.weight", ("pos_embed/embedding",))]
  for i in range(m["depth"]):
    hf, path = f"h.{i}", f"encoder/block_{i}"
    qkv = tuple(f"{path}/attn/{p}" for p in ("query", "key", "value"))
    # c_attn is one Conv1D [D, 3D] whose output axis is q | k | v, each heads x head_dim.
    rules += [Rule(f"{hf}.attn.c_attn.weight", tuple(q + "/kernel" for q in qkv), "conv1d"),
              Rule(f"{hf}.attn.c_attn.bias", tuple(q + "/bias" for q in qkv))]
    rules += _linear(f"{hf}.attn.c_proj", f"{path}/attn/out", in_dims=2, layout="conv1d")
    rules += _linear(f"{hf}.mlp.c_fc", f"{path}/mlp/fc1", layout="conv1d")
    rules += _linear(f"{hf}.mlp.c_proj", f"{path}/mlp/fc2", layout="conv1d")
    rules += _norm(f"{hf}.ln_1", f"{path}/ln_attn") + _norm(f"{hf}.ln_2", f"{path}/ln_mlp")
  rules += _norm("ln_f", "encoder/ln_final")
  # A tied read-out is the token table (transformers saves no lm_head.weight then); an
  # untied one is its own nn.Linear [vocab, width], outside the `transformer.` prefix.
  if m.get("lm_head", True) and not m.get("tie_embeddings", True):
    rules.append(Rule("lm_head.weight", ("lm_out/kernel",), "linear"))
  return rules


# ---- ViT ----
_VIT_LAYER = dict(attn="attention.attention", attn_out="attention.output.dense",
                  fc1="intermediate.dense", fc2="output.dense",
                  ln_attn="layernorm_before", ln_mlp="layernorm_after")
# ViTImageProcessor's defaults (IMAGENET_STANDARD_MEAN / _STD) when a folder has no
# preprocessor_config.json.
_VIT_PIXEL_DEFAULT = 0.5


def _pixel_stat(value: Any, channels: int, key: str) -> float | tuple[float, ...]:
  """preprocessor_config.json's image_mean/image_std -> a float or a per-channel tuple."""
  if not isinstance(value, (list, tuple)):
    return float(value)
  if len(value) not in (1, channels):
    raise ConfigError(f"preprocessor_config.json's {key} has {len(value)} values for "
                      f"{channels} channels.")
  return float(value[0]) if len(value) == 1 else tuple(float(v) for v in value)


def _vit_model_config(cfg: dict, extra: dict) -> dict:
  if not _get(cfg, "qkv_bias", default=True):
    raise ConfigError("ViT imports need qkv_bias=True (mmjax's attention has biases).")
  channels = int(_get(cfg, "num_channels", default=3))
  proc = extra.get("preprocessor", {})
  if proc.get("do_normalize", True):
    mean = proc.get("image_mean", _VIT_PIXEL_DEFAULT)
    std = proc.get("image_std", _VIT_PIXEL_DEFAULT)
  else:   # the processor feeds rescaled [0,1] pixels as they are
    mean, std = 0.0, 1.0
  return dict(
      name="vit", image_size=_square(_req(cfg, "image_size"), "image_size"),
      patch_size=_square(_req(cfg, "patch_size"), "patch_size"), channels=channels,
      width=_req(cfg, "hidden_size"), depth=_req(cfg, "num_hidden_layers"),
      num_heads=_req(cfg, "num_attention_heads"), mlp_dim=_req(cfg, "intermediate_size"),
      dropout=float(_get(cfg, "hidden_dropout_prob", default=0.0)),
      num_classes=int(extra.get("num_labels", 0)), pool="cls",
      pixel_mean=_pixel_stat(mean, channels, "image_mean"),
      pixel_std=_pixel_stat(std, channels, "image_std"),
      layer_norm_eps=float(_get(cfg, "layer_norm_eps", default=1e-12)),
      activation=_activation(_get(cfg, "hidden_act", default="gelu"), "hidden_act"))


def _vit_hf_config(m: dict) -> dict:
  _refuse(m, "ViT", {"pool": ("cls", "Hugging Face's ViT reads its cls token")})
  hf = dict(architectures=["ViTModel"], model_type="vit", image_size=m["image_size"],
            patch_size=m["patch_size"], num_channels=m["channels"],
            hidden_size=m["width"], num_hidden_layers=m["depth"],
            num_attention_heads=m["num_heads"], intermediate_size=m["mlp_dim"],
            hidden_dropout_prob=m.get("dropout", 0.0), attention_probs_dropout_prob=0.0,
            layer_norm_eps=m["layer_norm_eps"], hidden_act=_HF_ACTIVATIONS[m["activation"]],
            qkv_bias=True)
  if m.get("num_classes"):
    hf["architectures"] = ["ViTForImageClassification"]
    _labels(hf, m["num_classes"])
  return hf


def _vit_preprocessor(m: dict) -> dict:
  """preprocessor_config.json (ViTImageProcessor) with the model's pixel normalisation:
  mmjax's ViT takes [0,1] pixels and normalises inside, the processor rescales by 1/255
  and normalises before the model, so both see (x - mean) / std."""
  def per_channel(v: Any) -> list[float]:
    return ([float(x) for x in v] if isinstance(v, (list, tuple))
            else [float(v)] * m["channels"])
  size = m["image_size"]
  return dict(image_processor_type="ViTImageProcessor", do_resize=True,
              size={"height": size, "width": size}, resample=2, do_rescale=True,
              rescale_factor=1 / 255, do_normalize=True,
              image_mean=per_channel(m.get("pixel_mean", _VIT_PIXEL_DEFAULT)),
              image_std=per_channel(m.get("pixel_std", _VIT_PIXEL_DEFAULT)))


def _vit_rules(m: dict) -> list[Rule]:
  rules = [Rule("embeddings.cls_token", ("cls_token",)),
           Rule("embeddings.position_embeddings", ("pos_embed/embedding",), "unbatch"),
           Rule("embeddings.patch_embeddings.projection.weight", ("patch_embed/proj/kernel",),
                "conv"),
           Rule("embeddings.patch_embeddings.projection.bias", ("patch_embed/proj/bias",))]
  for i in range(m["depth"]):
    rules += _block_rules(f"encoder.layer.{i}", f"encoder/block_{i}", _VIT_LAYER)
  rules += _norm("layernorm", "encoder/ln_final")
  if m.get("num_classes"):
    rules += _linear("classifier", "head")
  # ViTModel's pooler (tanh(Dense) on the cls token) has no mmjax counterpart: on import
  # it is reported unused; an exported ViTModel lacks it (transformers initialises it).
  return rules


FAMILIES = {
    # cls.predictions.decoder.{weight,bias} repeat the word embeddings (tied) and
    # cls.predictions.bias.
    "bert": Family("bert", ("bert.",), ("position_ids", "cls.predictions.decoder.weight",
                                        "cls.predictions.decoder.bias"),
                   _bert_model_config, _bert_hf_config, _bert_rules, base_arch="BertModel",
                   head_keys=("classifier.", "cls.")),
    # `.attn.bias` / `.attn.masked_bias` are the causal-mask buffers older files hold.
    "gpt2": Family("gpt2", ("transformer.",), (".attn.bias", ".attn.masked_bias"),
                   _gpt2_model_config, _gpt2_hf_config, _gpt2_rules, base_arch="GPT2Model",
                   head_keys=("lm_head.",)),
    "vit": Family("vit", ("vit.",), (), _vit_model_config, _vit_hf_config, _vit_rules,
                  base_arch="ViTModel", preprocessor=_vit_preprocessor),
}
