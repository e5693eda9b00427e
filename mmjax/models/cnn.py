"""Convolutional classifiers used by the adversarial-training papers.

- MnistCNN: Wong et al. 2020 (Fast AT) MNIST net, Conv16-Conv32-FC100-FC10.
- DpMnistCNN: the DP-SGD MNIST net of TF Privacy's tutorial and Papernot et al. 2021
  (tempered sigmoids): Conv16 8x8/2-MaxPool-Conv32 4x4/2-MaxPool-FC32-FC10, tanh.
- PreActResNet18: He et al. 2016 pre-activation ResNet-18 with a CIFAR stem (Fast AT).
- WideResNet: Zagoruyko & Komodakis 2016, pre-activation blocks (Madry / TRADES WRN-34-10).

Layer shapes follow the PyTorch reference code (convolutions without bias, PyTorch
BatchNorm epsilon 1e-5 and momentum 0.1 == flax momentum 0.9), so parameter counts match
the published ones. Channels carry the logical axis 'embed' (convolution kernels
[kh, kw, in, out] on `out`, BatchNorm and biases on their only axis, dense layers on their
input), so FSDP shards them like a transformer's width; tensor parallelism leaves them
alone. The wrapped initializers draw exactly the values of the plain ones.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.models.conv import canonical_conv
from mmjax.models.registry import MODELS

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


# N(0, 2 / (k*k*out_channels)): the WRN reference init (TRADES, Madry et al.).
_HE_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features: int, kernel: int, stride: int, dtype, name: str | None = None):
  """PyTorch-style Conv2d(padding=kernel//2, bias=False); explicit symmetric padding so
  stride-2 outputs match PyTorch exactly (flax 'SAME' pads asymmetrically)."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False, dtype=dtype,
                 kernel_init=layers.partitioned(_HE_FAN_OUT, _CONV_AXES),
                 conv_general_dilated=canonical_conv, name=name)


_CONV_AXES = (None, None, None, "embed")
_LECUN = nn.initializers.lecun_normal()   # flax's nn.Dense / nn.Conv default


def _batch_norm(dtype, name: str | None = None) -> nn.BatchNorm:
  return nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=dtype, name=name,
                      scale_init=layers.partitioned(layers.ones, ("embed",)),
                      bias_init=layers.partitioned(layers.zeros, ("embed",)))


class _PixelClassifier(nn.Module):
  """The seam every CNN here shares: pixels pass `embed` unchanged (attacks perturb
  them), `encode` (the subclass's) maps them to features and logits."""

  def embed(self, batch: dict, *, train: bool = False) -> dict:
    """batch -> {'image': [B,H,W,C]} pixels in [0,1]."""
    del train
    return {"image": batch["image"]}

  def __call__(self, batch: dict, *, train: bool = False) -> dict:
    return self.encode(self.embed(batch, train=train), train=train)

  def initialize(self, batch: dict) -> dict:
    return self(batch, train=False)


@MODELS.register("mnist_cnn")
class MnistCNN(_PixelClassifier):
  """[B,28,28,1] -> Conv16(4x4,s2,p1)-ReLU-Conv32(4x4,s2,p1)-ReLU-FC100-ReLU-FC10."""
  num_classes: int = 10
  pixel_mean: Any = 0.0
  pixel_std: Any = 1.0

  def setup(self):
    conv = functools.partial(nn.Conv, kernel_size=(4, 4), strides=(2, 2),
                             padding=((1, 1), (1, 1)), conv_general_dilated=canonical_conv,
                             kernel_init=layers.partitioned(_LECUN, _CONV_AXES),
                             bias_init=layers.partitioned(layers.zeros, ("embed",)))
    self.conv1 = conv(16)
    self.conv2 = conv(32)
    self.fc1 = layers.dense(100, ("embed", None), jnp.float32, kernel_init=_LECUN)
    if self.num_classes > 0:
      self.fc2 = layers.dense(self.num_classes, ("embed", None), jnp.float32,
                              kernel_init=_LECUN)

  def encode(self, inputs: dict, *, train: bool = False) -> dict:
    """{'image': [B,28,28,C]} -> {'pooled': [B,100], 'logits': [B,K]?}."""
    del train
    x = layers.normalize_pixels(inputs["image"], self.pixel_mean, self.pixel_std)
    x = nn.relu(self.conv2(nn.relu(self.conv1(x))))
    pooled = nn.relu(self.fc1(x.reshape(x.shape[0], -1)))
    out = {"pooled": pooled}
    if self.num_classes > 0:
      out["logits"] = self.fc2(pooled)
    return out


_ACTIVATIONS = {"tanh": jnp.tanh, "relu": nn.relu}


@MODELS.register("dp_mnist_cnn")
class DpMnistCNN(_PixelClassifier):
  """Papernot et al. 2021's MNIST net for DP-SGD (TF Privacy's tutorial CNN, 26,010
  parameters): 'SAME' conv 16 8x8 stride 2, max-pool 2x2 stride 1, 'VALID' conv 32 4x4
  stride 2, max-pool 2x2 stride 1, dense 32, dense num_classes. `activation` 'tanh' is
  their tempered sigmoid (s=2, T=2, o=1: bounded activations keep per-example gradient
  norms small, so clipping loses less); 'relu' is the baseline they beat. No
  normalisation layer: nothing mixes the examples of a batch."""
  num_classes: int = 10
  activation: str = "tanh"
  dtype: Any = jnp.float32
  pixel_mean: Any = 0.0
  pixel_std: Any = 1.0

  def setup(self):
    if self.activation not in _ACTIVATIONS:
      raise ConfigError(f"Unknown model.activation={self.activation!r}; choose one of "
                        f"{', '.join(_ACTIVATIONS)}.")
    conv = functools.partial(nn.Conv, conv_general_dilated=canonical_conv,
                             kernel_init=layers.partitioned(_LECUN, _CONV_AXES),
                             bias_init=layers.partitioned(layers.zeros, ("embed",)))
    self.conv1 = conv(16, (8, 8), strides=(2, 2), padding="SAME")
    self.conv2 = conv(32, (4, 4), strides=(2, 2), padding="VALID")
    self.fc1 = layers.dense(32, ("embed", None), jnp.float32, kernel_init=_LECUN)
    self.fc2 = layers.dense(self.num_classes, ("embed", None), jnp.float32,
                            kernel_init=_LECUN)

  def encode(self, inputs: dict, *, train: bool = False) -> dict:
    """{'image': [B,28,28,C]} -> {'pooled': [B,32], 'logits': [B,K]}."""
    del train
    act = _ACTIVATIONS[self.activation]
    pool = lambda x: nn.max_pool(x, (2, 2), strides=(1, 1))
    x = layers.normalize_pixels(inputs["image"], self.pixel_mean, self.pixel_std)
    x = pool(act(self.conv1(x)))
    x = pool(act(self.conv2(x)))
    pooled = act(self.fc1(x.reshape(x.shape[0], -1)))
    return {"pooled": pooled, "logits": self.fc2(pooled)}


class PreActBlock(nn.Module):
  """BN-ReLU-Conv3x3(stride)-BN-ReLU-[Dropout]-Conv3x3, plus a shortcut; the 1x1 shortcut
  conv (when shape changes) reads the pre-activated input, as in both reference codes."""
  features: int
  stride: int = 1
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """[B,H,W,Cin] -> [B,H/stride,W/stride,features]."""
    out = nn.relu(_batch_norm(self.dtype, "bn1")(x, use_running_average=not train))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = _conv(self.features, 1, self.stride, self.dtype, "shortcut")(out)
    out = _conv(self.features, 3, self.stride, self.dtype, "conv1")(out)
    out = nn.relu(_batch_norm(self.dtype, "bn2")(out, use_running_average=not train))
    out = nn.Dropout(self.dropout)(out, deterministic=not train)
    out = _conv(self.features, 3, 1, self.dtype, "conv2")(out)
    return out + shortcut


class _PreActNet(_PixelClassifier):
  """Shared body: stem conv -> pre-activation stages -> BN-ReLU -> global average pool.

  Subclasses define the dataclass fields and `_arch() -> (stem, [(features, blocks,
  stride)], dropout)`.
  """

  def _arch(self):
    raise NotImplementedError

  def setup(self):
    dt = layers.compute_dtype(self.dtype)
    stem, stages, dropout = self._arch()
    self.stem = _conv(stem, 3, 1, dt)
    self.blocks = [PreActBlock(features, stride if i == 0 else 1, dropout, dt)
                   for features, n, stride in stages for i in range(n)]
    self.bn = _batch_norm(dt)
    if self.num_classes > 0:
      self.head = layers.dense(self.num_classes, ("embed", None), dt, kernel_init=_LECUN)
    if self.projection_dim > 0:
      width = stages[-1][0]
      self.projection = layers.ProjectionHead(width, self.projection_dim, dt)

  def encode(self, inputs: dict, *, train: bool = False) -> dict:
    """{'image': [B,H,W,C]} -> {'pooled': [B,F], 'logits': [B,K]?, 'projection': [B,P]?}.

    train=True uses batch statistics and updates 'batch_stats' (apply with
    mutable=['batch_stats']); train=False uses the running averages.
    """
    x = layers.normalize_pixels(inputs["image"], self.pixel_mean, self.pixel_std)
    x = self.stem(x.astype(layers.compute_dtype(self.dtype)))
    for block in self.blocks:
      x = block(x, train=train)
    x = nn.relu(self.bn(x, use_running_average=not train))
    pooled = x.mean(axis=(1, 2))
    out = {"pooled": pooled.astype(jnp.float32)}
    if self.num_classes > 0:
      out["logits"] = self.head(pooled).astype(jnp.float32)
    if self.projection_dim > 0:
      out["projection"] = self.projection(pooled).astype(jnp.float32)
    return out


@MODELS.register("preact_resnet18")
class PreActResNet18(_PreActNet):
  """Pre-activation ResNet-18, widths 64-128-256-512, 3x3 stem (CIFAR), as in Wong et al.'s
  Fast AT code: 11,172,170 params with 10 classes (11,171,146 plus the final pre-activation
  BatchNorm's 2*512). Defaults normalise with CIFAR-10 statistics, as Fast AT does."""
  num_classes: int = 10
  pixel_mean: Any = CIFAR10_MEAN
  pixel_std: Any = CIFAR10_STD
  projection_dim: int = 0
  dtype: str = "float32"

  def _arch(self):
    return 64, [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)], 0.0


@MODELS.register("wide_resnet")
class WideResNet(_PreActNet):
  """WRN-depth-widen_factor: (depth-4)/6 blocks per stage, widths 16k-32k-64k after a
  16-channel stem. WRN-34-10: 46,160,474 params; WRN-28-10: 36,479,194. Defaults do not
  normalise pixels (as Madry et al. and TRADES)."""
  depth: int = 28
  widen_factor: int = 10
  num_classes: int = 10
  dropout: float = 0.0
  pixel_mean: Any = 0.0
  pixel_std: Any = 1.0
  projection_dim: int = 0
  dtype: str = "float32"

  def _arch(self):
    if (self.depth - 4) % 6:
      raise ConfigError(f"config.model.depth={self.depth} for wide_resnet must be "
                               "6n+4 (e.g. 28 or 34).")
    n, k = (self.depth - 4) // 6, self.widen_factor
    return 16, [(16 * k, n, 1), (32 * k, n, 2), (64 * k, n, 2)], self.dropout
