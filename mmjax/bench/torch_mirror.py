"""PyTorch mirrors of mmjax's convolutional classifiers, for attacks run by PyTorch libraries.

A reference attack implementation (torchattacks' AutoAttack, benchmarks/
autoattack_reference.py) must attack the *same* network as mmjax's attack: the same
weights, the same preprocessing, the same logits. This module rebuilds mmjax's
`mnist_cnn`, `preact_resnet18` and `wide_resnet` (mmjax/models/cnn.py) as torch modules
and copies a flax variables dict into them:

  model = torch_mirror.mirror_for(config.model, image_shape=(28, 28, 1))
  torch_mirror.load_flax_params(model, {'params': ..., 'batch_stats': ...})
  logits = model(images_nchw)          # images in [0, 1], NCHW; eval mode

Mirrors take NCHW pixels in [0, 1] (torch's layout; mmjax's are NHWC) and normalise them
with the flax model's pixel_mean / pixel_std inside forward, as mmjax does, so attacks
work in pixel space with bounds [0, 1] on both sides. Torch module and attribute names
follow the flax ones (`blocks.3.bn1` is flax's `blocks_3/bn1`), so the weight copy is a
walk over the flax tree: conv kernels HWIO -> OIHW, dense kernels [in, out] -> [out, in],
BatchNorm scale/bias/mean/var -> weight/bias/running_mean/running_var, with flax's epsilon.
`load_flax_params` loads strictly: a tensor left unmapped on either side is an error.

PyTorch is optional (the `bench` extra) and only this module imports it; nothing in
`mmjax` imports this module.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# mmjax's BatchNorm epsilon (mmjax/models/cnn.py `_batch_norm`: PyTorch's 1e-5). Read from
# the flax layer itself, so that a change there cannot leave the mirror silently off.
from mmjax.models import cnn as _flax_cnn

# pylint: disable-next=protected-access
FLAX_BATCH_NORM_EPSILON = float(_flax_cnn._batch_norm(None).epsilon)

MIRRORED_MODELS = ("mnist_cnn", "preact_resnet18", "wide_resnet")


class PixelNormalize(nn.Module):
  """(x - mean) / std on NCHW pixels; mean/std scalars or per-channel (mmjax's
  `layers.normalize_pixels`)."""

  def __init__(self, mean: Any, std: Any):
    super().__init__()
    shape = lambda v: torch.as_tensor(np.asarray(v, np.float32)).reshape(1, -1, 1, 1)
    # Buffers, not parameters: they move with .to(device) but are not in the flax tree,
    # and persistent=False keeps them out of the state dict load_flax_params fills.
    self.register_buffer("mean", shape(mean), persistent=False)
    self.register_buffer("std", shape(std), persistent=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return (x - self.mean) / self.std


class MnistCNN(nn.Module):
  """Wong et al.'s MNIST net: [B,C,H,W] -> Conv16(4x4,s2,p1)-ReLU-Conv32(4x4,s2,p1)-ReLU-
  FC100-ReLU-FC10 (mmjax's `mnist_cnn`; Flatten in torch's C,H,W order)."""

  def __init__(self, num_classes: int = 10, pixel_mean: Any = 0.0, pixel_std: Any = 1.0,
               image_shape: Sequence[int] = (28, 28, 1)):
    super().__init__()
    height, width, channels = image_shape
    self.normalize = PixelNormalize(pixel_mean, pixel_std)
    self.conv1 = nn.Conv2d(channels, 16, 4, stride=2, padding=1)
    self.conv2 = nn.Conv2d(16, 32, 4, stride=2, padding=1)
    # Two stride-2 convolutions with kernel 4, padding 1: each halves H and W (floor).
    self.feature_shape = (32, height // 4, width // 4)
    self.fc1 = nn.Linear(int(np.prod(self.feature_shape)), 100)
    self.fc2 = nn.Linear(100, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(self.conv2(F.relu(self.conv1(self.normalize(x)))))
    return self.fc2(F.relu(self.fc1(x.flatten(1))))

  def flax_dense_kernel(self, name: str, kernel: np.ndarray) -> np.ndarray:
    """fc1's rows follow flax's NHWC flatten (h, w, c); torch flattens NCHW (c, h, w)."""
    if name != "fc1":
      return kernel
    c, h, w = self.feature_shape
    if kernel.shape[0] != c * h * w:
      raise ValueError(f"flax fc1 kernel has {kernel.shape[0]} inputs, this mirror's fc1 "
                       f"{c * h * w} ({c}x{h}x{w}): built for another image_shape?")
    return kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)


class PreActBlock(nn.Module):
  """BN-ReLU-Conv3x3(stride)-BN-ReLU-[Dropout]-Conv3x3 plus a shortcut; the 1x1 shortcut
  conv (when the shape changes) reads the pre-activated input (mmjax's PreActBlock)."""

  def __init__(self, in_features: int, features: int, stride: int, dropout: float):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_features, eps=FLAX_BATCH_NORM_EPSILON)
    self.conv1 = nn.Conv2d(in_features, features, 3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(features, eps=FLAX_BATCH_NORM_EPSILON)
    self.dropout = nn.Dropout(dropout)
    self.conv2 = nn.Conv2d(features, features, 3, stride=1, padding=1, bias=False)
    self.shortcut = None
    if stride != 1 or in_features != features:
      self.shortcut = nn.Conv2d(in_features, features, 1, stride=stride, bias=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = F.relu(self.bn1(x))
    shortcut = x if self.shortcut is None else self.shortcut(out)
    out = self.conv1(out)
    out = self.dropout(F.relu(self.bn2(out)))
    return self.conv2(out) + shortcut


class PreActNet(nn.Module):
  """Stem conv3x3 -> pre-activation stages -> BN-ReLU -> global average pool -> linear head
  (mmjax's `_PreActNet`). `stages` is [(features, blocks, stride)], as the flax `_arch`."""

  def __init__(self, stem: int, stages: Sequence[tuple[int, int, int]], dropout: float,
               num_classes: int, pixel_mean: Any, pixel_std: Any, in_channels: int):
    super().__init__()
    self.normalize = PixelNormalize(pixel_mean, pixel_std)
    self.stem = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
    blocks, width = [], stem
    for features, n, stride in stages:
      for i in range(n):
        blocks.append(PreActBlock(width, features, stride if i == 0 else 1, dropout))
        width = features
    self.blocks = nn.ModuleList(blocks)
    self.bn = nn.BatchNorm2d(width, eps=FLAX_BATCH_NORM_EPSILON)
    self.head = nn.Linear(width, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.stem(self.normalize(x))
    for block in self.blocks:
      x = block(x)
    return self.head(F.relu(self.bn(x)).mean(dim=(2, 3)))


def mirror_for(model_config: Any, *, image_shape: Sequence[int]) -> nn.Module:
  """A torch mirror (random weights, eval mode) of the flax model `model_config` builds.

  model_config: config.model (ConfigDict or dict with 'name'); fields it leaves out take
  the flax class's defaults. image_shape: (H, W, C) of one input image. Raises ValueError
  for a model or a setting the mirrors do not implement.
  """
  from mmjax import models  # pylint: disable=g-import-not-at-top
  cfg = models.config_with_defaults(model_config)
  name = cfg["name"]
  if name not in MIRRORED_MODELS:
    raise ValueError(f"No PyTorch mirror for model {name!r}; mirrored: {MIRRORED_MODELS}.")
  if cfg["num_classes"] <= 0:
    raise ValueError("The mirrors are classifiers: model.num_classes must be > 0.")
  if cfg.get("projection_dim", 0) or cfg.get("dtype", "float32") != "float32":
    raise ValueError("The mirrors implement projection_dim=0 and dtype='float32' only "
                     f"(got {cfg.get('projection_dim')}, {cfg.get('dtype')!r}).")
  height, width, channels = image_shape
  if name == "mnist_cnn":
    model = MnistCNN(cfg["num_classes"], cfg["pixel_mean"], cfg["pixel_std"],
                     (height, width, channels))
  else:
    # The architecture table of the flax class itself, so widths and depths cannot drift.
    flax_model = models.build_model(cfg)
    stem, stages, dropout = flax_model._arch()  # pylint: disable=protected-access
    model = PreActNet(stem, stages, dropout, cfg["num_classes"], cfg["pixel_mean"],
                      cfg["pixel_std"], channels)
  return model.eval()


def _torch_name(path: Sequence[str]) -> str:
  """flax path ('blocks_3', 'bn1') -> torch module name 'blocks.3.bn1'."""
  parts = []
  for part in path:
    head, _, index = part.rpartition("_")
    parts.extend([head, index] if head == "blocks" and index.isdigit() else [part])
  return ".".join(parts)


def _leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()):
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from _leaves(value, prefix + (key,))
    else:
      yield prefix + (key,), np.asarray(value, np.float32)


def flax_to_torch_state(torch_module: nn.Module, flax_variables: Mapping[str, Any]
                        ) -> dict[str, torch.Tensor]:
  """The torch state dict of a flax variables dict {'params': ..., 'batch_stats': ...}."""
  modules = dict(torch_module.named_modules())
  state = {}
  for collection, tree in flax_variables.items():
    if collection not in ("params", "batch_stats"):
      raise ValueError(f"Unexpected flax collection {collection!r}: the mirrors hold "
                       "'params' and 'batch_stats' only.")
    for path, value in _leaves(tree):
      name, leaf = _torch_name(path[:-1]), path[-1]
      module = modules.get(name)
      if module is None:
        raise ValueError(f"flax variable {collection}/{'/'.join(path)} has no torch "
                         f"module {name!r} in {type(torch_module).__name__}.")
      if isinstance(module, nn.BatchNorm2d):
        key = {("params", "scale"): "weight", ("params", "bias"): "bias",
               ("batch_stats", "mean"): "running_mean",
               ("batch_stats", "var"): "running_var"}[(collection, leaf)]
        # Eval mode reads only the running statistics; the counter is for training.
        state[f"{name}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
      elif leaf == "kernel" and value.ndim == 4:
        key, value = "weight", value.transpose(3, 2, 0, 1)   # HWIO -> OIHW
      elif leaf == "kernel" and value.ndim == 2:
        if hasattr(torch_module, "flax_dense_kernel"):
          value = torch_module.flax_dense_kernel(name, value)
        key, value = "weight", value.T                        # [in, out] -> [out, in]
      elif leaf == "bias":
        key = "bias"
      else:
        raise ValueError(f"Unmapped flax variable {collection}/{'/'.join(path)}.")
      state[f"{name}.{key}"] = torch.from_numpy(np.ascontiguousarray(value))
  return state


def load_flax_params(torch_module: nn.Module, flax_variables: Mapping[str, Any]
                     ) -> nn.Module:
  """Copies flax variables ({'params': ..., 'batch_stats': ...}; numpy or jax arrays)
  into the mirror, strictly (every torch tensor set, every flax one used, shapes equal),
  and returns it in eval mode (BatchNorm on the running statistics, as mmjax's
  train=False)."""
  state = flax_to_torch_state(torch_module, flax_variables)
  wanted = torch_module.state_dict()
  wrong = [f"{k}: flax gives {tuple(v.shape)}, torch wants {tuple(wanted[k].shape)}"
           for k, v in state.items() if k in wanted and v.shape != wanted[k].shape]
  if wrong:
    raise ValueError("Shape mismatch copying flax variables into "
                     f"{type(torch_module).__name__}: " + "; ".join(wrong[:5]))
  torch_module.load_state_dict(state, strict=True)
  return torch_module.eval()
