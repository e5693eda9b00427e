r"""Cost of a PGD-k adversarial train step relative to the clean step of the same config.

  python benchmarks/pgd_step_cost.py configs/digits_cnn.py 1 5 10

Prints the median of 30 steps (after 3 warm-up steps) on one fixed device batch, for the
clean step and for `adversarial.kind=madry, attack=pgd, eps=0.1, steps=k`, with the
ratio and the 1.1·(k+1) budget. Uses the config's dataset only for shapes. Results:
docs/benchmarks.md.
"""
import statistics
import sys
import tempfile
import time

import jax

from mmjax import parallel
from mmjax.config import load_config_file
from mmjax.train import loop


def median_step_ms(config_path: str, k: int, reps: int = 30) -> float:
  config = load_config_file(config_path)
  if k:
    config.adversarial.update(dict(kind="madry", attack="pgd", eps=0.1, steps=k,
                                   step_size=0.03))
  with tempfile.TemporaryDirectory() as workdir:
    exp = loop.build_experiment(config, workdir)
    train_step, _ = loop.compile_steps(exp)
    batch = parallel.to_global_batch(exp.example_batch, exp.mesh)
    state = exp.init_state()
    acc = loop.accumulator_factory(exp)()
    for _ in range(3):
      state, acc = train_step(state, batch, acc)
    jax.block_until_ready(acc)
    times = []
    for _ in range(reps):
      start = time.perf_counter()
      state, acc = train_step(state, batch, acc)
      jax.block_until_ready(acc)
      times.append(time.perf_counter() - start)
    exp.checkpointer.close()
  return statistics.median(times) * 1000


def main(argv):
  config_path, ks = argv[1], [int(k) for k in argv[2:]] or [1, 5, 10]
  clean = median_step_ms(config_path, 0)
  print(f"{config_path} on {jax.devices()[0].device_kind}: clean step {clean:.1f} ms")
  for k in ks:
    adv = median_step_ms(config_path, k)
    print(f"  PGD-{k}: {adv:.1f} ms = {adv / clean:.2f}x clean "
          f"(budget 1.1*(k+1) = {1.1 * (k + 1):.1f}x)")


if __name__ == "__main__":
  main(sys.argv)
