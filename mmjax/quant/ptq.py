"""Post-training int8 quantization of a trained model's parameters, with qwix.

Methods (`quantization.method`):
  int8_weight_only  Dense/Conv kernels int8, per output channel (absmax scales); each
                    matmul dequantizes its kernel and runs in float32.
  int8_dynamic      kernels as above and each matmul's input quantized to int8 on the
                    fly (per-example absmax), so the matmul is int8 x int8 -> int32.
  int8_static       as int8_dynamic, but the inputs' scales are fixed before serving,
                    from a calibration pass over N training batches: each example's
                    absmax (per token position in a transformer), reduced over all the
                    calibration examples by `quantization.calibration_statistic`: 'mean'
                    (clips the examples with larger ranges), 'max' (clips none, coarser
                    steps) or a percentile 'pNN.N' between them.

The quantized model is the same flax module rewritten by qwix (`quantize_model`); its
params tree holds qwix `WithAux(QArray)` leaves (int8 `qvalue` + float32 `scale`) where
the float model held kernels.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError

METHODS = ("int8_weight_only", "int8_dynamic", "int8_static")


def check_method(method: str) -> None:
  """ConfigError unless `method` is one of METHODS."""
  if method not in METHODS:
    raise ConfigError(f"Unknown quantization.method={method!r}; choose one of "
                      f"{', '.join(METHODS)}.")


def check_installed() -> None:
  """ConfigError unless qwix (the `quant` extra) imports."""
  try:
    import qwix  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    raise ConfigError("int8 quantization needs the quant extra (qwix is not installed): "
                      "pip install -e '.[quant]'.") from None


def check_config(quantization) -> None:
  """ConfigError for a bad config.quantization value (no model or data needed)."""
  check_method(quantization.method)
  for key in ("calibration_batches", "latency_batches"):
    if not isinstance(quantization[key], int) or quantization[key] < 1:
      raise ConfigError(f"quantization.{key}={quantization[key]!r} must be an integer "
                        ">= 1.")
  calibration_statistic(quantization.calibration_statistic)


def calibration_statistic(name: str):
  """The reduction [N, ...] -> [1, ...] over calibration examples that `name` ('mean',
  'max' or a percentile 'pNN.N') means, or a ConfigError."""
  if name == "mean":
    return lambda x: jnp.mean(x, axis=0, keepdims=True)
  if name == "max":
    return lambda x: jnp.max(x, axis=0, keepdims=True)
  try:
    q = float(name[1:]) if name.startswith("p") else -1.0
  except ValueError:
    q = -1.0
  if not 0 < q <= 100:
    raise ConfigError(f"quantization.calibration_statistic={name!r}: choose 'mean', 'max' "
                      "or a percentile of the examples' ranges such as 'p99.9' (0 < p <= "
                      "100).")
  return lambda x: jnp.percentile(x, q, axis=0, keepdims=True)


def flat(tree) -> list[tuple[tuple[str, ...], Any]]:
  """[(path of dict keys, leaf)] of a params tree, quantized parameters as leaves."""
  leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=is_quantized)
  return [(tuple(str(getattr(k, "key", k)) for k in p), leaf) for p, leaf in leaves]


def _qwix():
  import qwix   # pylint: disable=import-outside-toplevel
  return qwix


def model_methods(model: nn.Module) -> tuple[str, ...]:
  """The public methods of the model class (plus __call__) that qwix must intercept:
  objectives and evaluators call `encode`, `embed`, `initialize`, ... directly."""
  names = {"__call__"}
  for cls in type(model).__mro__:
    if cls in (nn.Module, object):
      break
    names |= {n for n, v in vars(cls).items()
              if not n.startswith("_") and callable(v) and not isinstance(v, type)}
  return tuple(sorted(n for n in names if callable(getattr(type(model), n, None))))


# mmjax's convolutions (models/conv.py) run `lax.conv_general_dilated` inside a custom
# JVP, a trace of its own: qwix, which creates variables (int8 kernels, activation scales,
# calibration statistics) where it meets the convolution, would leak them out of that
# trace. Quantized models call the provider's convolution in its place; qwix's int8
# convolutions define their own gradients.
CANONICAL_CONV = "mmjax.models.conv._conv_general_dilated"


def _plain_conv(provider_conv):
  def conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
           dimension_numbers=None, feature_group_count=1, precision=None):
    return provider_conv(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                         rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                         feature_group_count=feature_group_count, precision=precision)
  return conv


def with_plain_conv(provider_cls):
  """`provider_cls` (a qwix provider class) that also rewrites mmjax's convolutions."""
  class Provider(provider_cls):
    def get_intercept_map(self):
      import mmjax.models.conv  # noqa: F401  (the patched module must be loaded)
      return super().get_intercept_map() | {
          CANONICAL_CONV: _plain_conv(self.conv_general_dilated)}
  Provider.__name__ = provider_cls.__name__
  return Provider


def _weight_only_conv_provider():
  """qwix's PtqProvider, plus weight-only convolutions: qwix 0.1 quantizes a conv's
  kernel only together with its input (its int8 conv needs both), so a weight-only conv
  here dequantizes the int8 kernel and convolves in float32, as weight-only matmuls do."""
  qwix = _qwix()
  from qwix._src.core import conv_general, qarray   # pylint: disable=import-outside-toplevel
  from qwix._src.providers import ptq as qwix_ptq   # pylint: disable=import-outside-toplevel
  from qwix._src.utils import flax_util   # pylint: disable=import-outside-toplevel

  class Provider(with_plain_conv(qwix.PtqProvider)):

    def conv_general_dilated(self, lhs, rhs, window_strides, padding, lhs_dilation=None,
                             rhs_dilation=None, dimension_numbers=None, **kwargs):
      rule, _ = self._get_current_rule_and_op_id("conv_general_dilated", only_rule=True)
      if rule is None or rule.weight_qtype is None or rule.act_qtype is not None:
        return super().conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
            dimension_numbers, **kwargs)
      dn = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
      if isinstance(rhs, qwix_ptq.WithAux):
        kernel = rhs.array
      else:
        how = conv_general.get_how_to_quantize(
            dimension_numbers=dn, for_lhs=False, qtype=rule.weight_qtype,
            calibration_method=rule.weight_calibration_method)
        kernel = qwix_ptq.create_quantized_param(flax_util.find_param(rhs), rhs, how).array
      kwargs.pop("preferred_element_type", None)
      return jax.lax.conv_general_dilated(
          lhs, qarray.dequantize(kernel).astype(lhs.dtype), window_strides, padding,
          lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, dimension_numbers=dn,
          **kwargs)

  return Provider


def rule(method: str, module_regex: str, training: bool = False,
         per_example_scales: bool = False):
  """The qwix rule of `method`; `per_example_scales`: int8_static's calibration pass
  keeps each example's input scale (no mean over the batch axis in qwix), reduced over
  all its examples afterwards (calibration_statistic)."""
  qwix = _qwix()
  acts = None if method == "int8_weight_only" else jnp.int8
  cls = qwix.QtRule if training else qwix.QuantizationRule
  extra = dict(act_batch_axes=()) if per_example_scales else {}
  return cls(module_path=module_regex, weight_qtype=jnp.int8, act_qtype=acts,
             act_static_scale=(method == "int8_static") if acts is not None else None,
             **extra)


def provider(method: str, module_regex: str, per_example_scales: bool = False):
  """The PTQ provider of `method` for the modules whose path fullmatches the regex."""
  check_method(method)
  return _weight_only_conv_provider()([rule(method, module_regex,
                                            per_example_scales=per_example_scales)])


def quantized_model(model: nn.Module, qwix_provider) -> nn.Module:
  """`model` rewritten by qwix on every public method."""
  return _qwix().quantize_model(model, qwix_provider, methods=model_methods(model))


def abstract_quantized_params(model: nn.Module, qwix_provider, batch: Mapping[str, Any]):
  """The quantized model's params tree, as ShapeDtypeStructs (no compute)."""
  qmodel = quantized_model(model, qwix_provider)
  return nn.meta.unbox(jax.eval_shape(
      lambda b: qmodel.init(jax.random.key(0), b, method="initialize"), batch))["params"]


def is_quantized(leaf: Any) -> bool:
  """True for a qwix quantized parameter (WithAux)."""
  from qwix._src.providers import ptq as qwix_ptq   # pylint: disable=import-outside-toplevel
  return isinstance(leaf, qwix_ptq.WithAux)


def calibrate_static_scales(qmodel: nn.Module, variables: Mapping[str, Any],
                            batches: Iterable[Mapping[str, Any]],
                            statistic: str = "mean") -> dict:
  """int8_static's calibration pass: `variables` (int8 kernels, no activation scales)
  plus each quantized matmul's input scale: the scale of each example's absmax (qwix),
  reduced over all the examples of `batches` by `statistic` (calibration_statistic).
  `qmodel`: quantized with `provider(..., per_example_scales=True)`.
  Layers are calibrated in order on one forward pass, so a layer's scales see the int8
  outputs of the layers before it."""
  reduce = calibration_statistic(statistic)

  @jax.jit
  def scales_of(batch):
    _, new = qmodel.apply(dict(variables), batch, mutable=["params"],
                          rngs={"params": jax.random.key(0)})   # unused: scales are data
    return new["params"]

  per_batch = [scales_of(batch) for batch in batches]
  if not per_batch:
    raise ValueError("int8_static needs at least one calibration batch "
                     "(quantization.calibration_batches > 0).")

  def reduce_scales(path, *leaves):
    is_scale = any(str(getattr(k, "key", "")).endswith("_scale") for k in path)
    return reduce(jnp.concatenate(leaves, axis=0)) if is_scale else leaves[0]

  params = jax.tree_util.tree_map_with_path(reduce_scales, *per_batch)
  return {**variables, "params": params}


def quantize(model: nn.Module, variables: Mapping[str, Any], method: str,
             plan, batch: Mapping[str, Any],
             calibration: Iterable[Mapping[str, Any]] = (),
             statistic: str = "mean") -> tuple[nn.Module, dict]:
  """(int8 model, its variables) from the float model's `variables` ({'params': ...,
  other collections}); `plan`: the layers.LayerPlan of the model. `batch`: an example
  batch (shapes); `calibration`: the batches of int8_static's calibration pass and
  `statistic` its reduction over their examples (ignored by the other methods)."""
  regex = plan.module_regex()
  qwix_provider = provider(method, regex)
  abstract = abstract_quantized_params(model, qwix_provider, batch)
  params = jax.jit(lambda p: _qwix().quantize_params(p, abstract))(variables["params"])
  qmodel = quantized_model(model, qwix_provider)
  qvariables = {**variables, "params": params}
  if method == "int8_static":
    calibrating = quantized_model(model, provider(method, regex, per_example_scales=True))
    qvariables = calibrate_static_scales(calibrating, qvariables, calibration, statistic)
  return qmodel, qvariables


def parameter_bytes(params: Any) -> dict[str, int]:
  """{'total': bytes of every parameter as stored, 'quantized_layers': bytes of the
  int8 layers' kernels with their scales, 'float_rest': the rest}."""
  total = quantized = 0
  for leaf in jax.tree.leaves(params, is_leaf=is_quantized):
    if is_quantized(leaf):
      n = sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize
              for x in jax.tree.leaves(leaf.array))
      quantized += n
    else:
      n = math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize
    total += n
  return {"total": total, "quantized_layers": quantized, "float_rest": total - quantized}


def kernel_bytes_float(params: Any, quantized_params: Any) -> int:
  """Bytes in `params` (float) of the kernels that `quantized_params` holds in int8."""
  flat_q = dict(flat(quantized_params))
  return sum(math.prod(v.shape) * jnp.dtype(v.dtype).itemsize
             for path, v in flat(params) if is_quantized(flat_q.get(path)))
