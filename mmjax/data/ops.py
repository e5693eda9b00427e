"""Host preprocessing ops (TensorFlow, per example, inside tf.data): a registry of them.

Specs ("to_float|random_crop(28, pad=2)|keep('image', 'label')") are parsed by
`mmjax.data.spec`; batched JAX ops that run on the devices are in `device_ops.py`. Each
registered op is a factory: called once with the spec's arguments, it returns
`op(example, seed) -> example`, where `example` is a dict of per-example tensors (no
batch dimension) and `seed` an int64 [2] stateless seed. Random ops draw only from `seed`
(`tf.random.stateless_*`), so an augmented example is a pure function of
(pipeline seed, element index) - the property that makes resuming exact and makes
parallel `map` deterministic.

Ops live in `ops_image.py`, `ops_text.py`, `ops_audio.py`, `ops_vqa.py`, `ops_ner.py` and
below (generic ones); all register into `host_registry.OPS`, and importing this module
imports them all, so `OPS` here is complete.
"""
from __future__ import annotations

from typing import Callable, Sequence

from mmjax.data import op_common, spec as spec_lib
# Imported for their registrations into OPS.
from mmjax.data import (ops_audio, ops_dialogue, ops_image, ops_ner,  # noqa: F401
                        ops_text, ops_vqa)
from mmjax.data.host_registry import OPS
from mmjax.data.lazy_tf import tf
from mmjax.data.spec import parse_spec
from mmjax.errors import ConfigError

Example = dict[str, "tf.Tensor"]
Op = Callable[[Example, "tf.Tensor"], Example]


def build_op(name: str, args: tuple = (), kwargs: dict | None = None) -> Op:
  """Looks up op `name` and builds it from its spec arguments (ConfigError if bad)."""
  return spec_lib.build_op(OPS, name, args, kwargs)


def build_preprocess_fn(spec: str | Sequence[str] | None
                        ) -> Callable[[Example, tf.Tensor], Example]:
  """Spec -> `fn(example, seed [2] int64) -> example` applying every op in order.

  Op i gets `fold_in(seed, i)`, so adding an op does not change the randomness of the
  ops before it. All ops are built (and their arguments checked) here, before any data is
  read, so a bad spec fails at once.
  """
  ops = [(name, build_op(name, args, kwargs)) for name, args, kwargs in parse_spec(spec)]

  def preprocess(example: Example, seed: tf.Tensor) -> Example:
    example = dict(example)
    seed = tf.cast(seed, tf.int64)
    for i, (name, op) in enumerate(ops):
      try:
        example = op(example, tf.random.experimental.stateless_fold_in(seed, i))
      except KeyError as e:
        raise ConfigError(f"Preprocessing op {name!r} needs key {e.args[0]!r}, but the "
                          f"example only has {sorted(example)}.") from None
    return example

  return preprocess


# keep and drop are plain dict ops, shared with the device ops (mmjax/data/device_ops.py).
OPS.register("keep")(op_common.keep)
OPS.register("drop")(op_common.drop)


@OPS.register("rename")
def rename(**new_to_old: str) -> Op:
  """rename(text='caption') moves example['caption'] to example['text']."""
  def op(example, seed):
    del seed
    op_common.require(example, *new_to_old.values())
    out = {k: v for k, v in example.items() if k not in new_to_old.values()}
    out.update({new: example[old] for new, old in new_to_old.items()})
    return out
  return op


@OPS.register("to_int32")
def to_int32(*keys: str) -> Op:
  """Casts `keys` (default: 'label') to int32."""
  keys = keys or ("label",)

  def op(example, seed):
    del seed
    op_common.require(example, *keys)
    return {**example, **{k: tf.cast(example[k], tf.int32) for k in keys}}
  return op


def op_names() -> list[str]:
  return OPS.names()

__all__ = ["OPS", "Op", "parse_spec", "build_op", "build_preprocess_fn", "op_names"]
