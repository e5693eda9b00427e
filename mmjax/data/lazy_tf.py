"""`tf`: TensorFlow, imported when an op first uses it rather than when a module is imported.

The host op modules (ops.py, ops_*.py) take `tf` from here. Importing them registers
their ops with their attributes (an op's `random=True`), and config checks ask that
registry (`data.in_memory` refuses random host ops) on machines without TensorFlow,
where the benchmark modes run (DESIGN.md principle 6). TensorFlow loads when an op is
built or traced, which only the tf.data pipeline does; without it, that raises the
usual ImportError.
"""
import importlib


class _TensorFlow:
  """Forwards attribute lookups to the `tensorflow` module, importing it on the first."""

  def __getattr__(self, name):
    return getattr(importlib.import_module("tensorflow"), name)


tf = _TensorFlow()

__all__ = ["tf"]
