"""Integrated gradients' cost against plain gradients: IG with S steps on a batch, timed
against S jitted forward + backward passes of the same batch (the issue's target: at most
1.2x). The model is the digits CNN at its initialisation (the cost does not depend on
the weights).

  python benchmarks/ig_cost.py [--steps 64] [--batch 32] [--repeats 5]
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import models
from mmjax.explain import methods


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=64)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  model = models.build_model(dict(name="mnist_cnn", num_classes=10))
  x = jnp.asarray(np.random.default_rng(0).random((args.batch, 28, 28, 1)), jnp.float32)
  variables = models.init_variables(model, {"image": x[:1]}, jax.random.PRNGKey(0))
  logits_fn = lambda v, z: model.apply(v, {"image": z}, method="encode",
                                       train=False)["logits"]
  target = jnp.zeros((args.batch,), jnp.int32)
  ig = jax.jit(lambda v, z: methods.integrated_gradients(
      lambda y: logits_fn(v, y), z, target, steps=args.steps))
  grad = jax.jit(lambda v, z: methods.gradient(lambda y: logits_fn(v, y), z, target))
  jax.block_until_ready(ig(variables, x))
  jax.block_until_ready(grad(variables, x))
  ratios = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    jax.block_until_ready(ig(variables, x))
    t_ig = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(args.steps + 1):   # the trapezoid evaluates steps + 1 points
      out = grad(variables, x * (i / args.steps))
    jax.block_until_ready(out)
    t_grad = time.perf_counter() - start
    ratios.append(t_ig / t_grad)
    print(f"IG {args.steps} steps: {t_ig * 1e3:.1f} ms; {args.steps + 1} gradients: "
          f"{t_grad * 1e3:.1f} ms; ratio {t_ig / t_grad:.2f}")
  print(f"median ratio {np.median(ratios):.2f} (device {jax.devices()[0].device_kind}, "
        f"batch {args.batch})")


if __name__ == "__main__":
  main()
