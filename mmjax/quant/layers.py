"""Which layers of a model int8 quantization rewrites, and the refusal of the rest.

qwix rewrites the matmuls (`dot_general`, `einsum`, `conv_general_dilated`) that run
inside the modules its rules match. mmjax matches modules by path, and only the layers
whose weights are a matmul operand and nothing else: flax's Dense, DenseGeneral and Conv.
Everything else keeps float32 on purpose: normalisation scales, embedding tables and
tokens (read by lookups and additions, which have no int8 kernel) and LoRA adapters
(they train on top of the int8 base in QLoRA). A parameter that some *other* layer feeds
to a matmul (a tied embedding read out by `einsum`, a custom layer's own kernel) cannot
be quantized safely, since the same array is also read by an op qwix does not rewrite:
`check_supported` names such a layer before any compute and says what to do.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.quant import ptq

QUANTIZED_LAYERS = (nn.Dense, nn.DenseGeneral, nn.Conv)


def float_by_design() -> tuple[type, ...]:
  """Layer classes whose matmul weights stay float32 on purpose (LoRA adapters)."""
  from mmjax.models import layers   # pylint: disable=import-outside-toplevel
  return (layers.LoRA,)


@dataclasses.dataclass(frozen=True)
class LayerPlan:
  """`quantized`: '/'-joined module paths whose kernels become int8; `kept_float`:
  paths of matmul layers left in float32 (LoRA adapters, quantization.keep_float)."""
  quantized: tuple[str, ...]
  kept_float: tuple[str, ...]

  def module_regex(self) -> str:
    """One regex that fullmatches exactly the quantized module paths (qwix's rules)."""
    return "|".join(re.escape(p) for p in self.quantized) or "(?!)"


def _module_classes(model: nn.Module, batch: Mapping[str, Any]) -> dict[str, type]:
  """{'/'-joined module path: class} of every module an init of the model calls."""
  seen = {}

  def record(next_fun, args, kwargs, context):
    seen["/".join(context.module.path)] = type(context.module)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda b: model.init(jax.random.key(0), b, method="initialize"), batch)
  return seen


def matmul_weights(model: nn.Module, batch: Mapping[str, Any]) -> dict[str, list[str]]:
  """{module path: [parameter names]} of every parameter that some matmul of the model
  reads as its weight operand: the params a quantize-everything qwix pass rewrites."""
  everything = ptq.provider("int8_weight_only", ".*")
  abstract = ptq.abstract_quantized_params(model, everything, batch)
  found: dict[str, list[str]] = {}
  for path, leaf in ptq.flat(abstract):
    if ptq.is_quantized(leaf):
      found.setdefault("/".join(path[:-1]), []).append(path[-1])
  return found


def plan_layers(model: nn.Module, batch: Mapping[str, Any],
                keep_float: Sequence[str] = ()) -> LayerPlan:
  """The layers int8 quantization rewrites, or a ConfigError naming each matmul layer it
  cannot (see the module docstring). `batch`: an example batch (shapes only);
  `keep_float`: regexes of module paths to leave in float32."""
  try:
    patterns = [re.compile(p) for p in keep_float]
  except re.error as e:
    raise ConfigError(f"quantization.keep_float has an invalid regex ({e}).") from None
  classes = _module_classes(model, batch)
  quantized, kept, refused = [], [], []
  for path, names in sorted(matmul_weights(model, batch).items()):
    cls = classes.get(path)
    if any(p.fullmatch(path) for p in patterns) or (
        cls is not None and issubclass(cls, float_by_design())):
      kept.append(path)
    elif cls is not None and issubclass(cls, QUANTIZED_LAYERS):
      quantized.append(path)
    else:
      refused.append(f"{path or '<model>'} ({getattr(cls, '__name__', '?')}: "
                     f"{', '.join(names)})")
  if refused:
    raise ConfigError(
        f"int8 quantization cannot rewrite {'; '.join(refused)}: its parameter feeds a "
        "matmul but the layer is not a Dense, DenseGeneral or Conv (e.g. a tied "
        "embedding also read by a lookup), so an int8 copy would break its other uses. "
        "Keep it in float32 with --config.quantization.keep_float='REGEX' matching its "
        "path (e.g. tie_embeddings=False gives the read-out its own Dense instead).")
  if not quantized:
    raise ConfigError("int8 quantization found no Dense, DenseGeneral or Conv layer to "
                      "quantize in this model (quantization.keep_float may match them "
                      "all).")
  return LayerPlan(tuple(quantized), tuple(kept))


def example_batch(batch: Mapping[str, Any]) -> dict:
  """One example of `batch` as ShapeDtypeStructs (all the layer plan needs)."""
  return {k: jax.ShapeDtypeStruct((1,) + tuple(v.shape[1:]), jnp.asarray(v).dtype
                                  if not hasattr(v, "dtype") else v.dtype)
          for k, v in batch.items()}
