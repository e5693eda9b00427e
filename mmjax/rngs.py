"""The named PRNG streams the models draw from, and one key split into one per stream.

`model.apply` draws from APPLY_STREAMS (dropout, MLM/MAE masks, on-device augmentation);
`model.init` also from 'params'. A stream's key depends on the tuple it is split from
(its order and length), so changing a tuple changes every run's randomness.
"""
from __future__ import annotations

from typing import Sequence

import jax

APPLY_STREAMS = ("dropout", "mask", "augment")
INIT_STREAMS = ("params", *APPLY_STREAMS)


def split_rngs(rng: jax.Array, streams: Sequence[str] = APPLY_STREAMS
               ) -> dict[str, jax.Array]:
  """{stream: key}, one key per name in `streams`, from jax.random.split(rng)."""
  return dict(zip(streams, jax.random.split(rng, len(streams))))
