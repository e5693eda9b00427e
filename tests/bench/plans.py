"""Run as a script with 8 fake CPU devices: AOT plans of a small GPT under variations of
mesh, remat, gradient accumulation and HBM size. Prints RESULTS {name: plan}."""
import json
import sys
import tempfile

import jax

jax.config.update("jax_num_cpu_devices", 8)

from mmjax.bench import plan as plan_lib  # noqa: E402
from mmjax.config import load_config_file  # noqa: E402


def gpt(**changes):
  c = load_config_file("configs/scale/gpt2_xl_fsdp.py", "tiny")
  c.data.name = "not_prepared_here"     # shapes come from the model, as on an accelerator
  c.model.update(dict(remat="none", depth=4, width=128, mlp_dim=512, max_len=64))
  c.train.batch_size = 64
  for key, value in changes.items():
    section, name = key.split("__")
    c[section][name] = value
  return c


VARIANTS = {
    "fsdp": gpt(),
    "dp": gpt(mesh__shape={"data": -1}, plan__hbm_gib=0.001),   # does not fit 1 MiB
    "remat_full": gpt(model__remat="full"),
    "accum4": gpt(optim__grad_accum_steps=4),
}


def main():
  results = {}
  for name, config in VARIANTS.items():
    results[name] = plan_lib.plan_train_step(config, tempfile.mkdtemp())
  print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
  main(*sys.argv[1:])
