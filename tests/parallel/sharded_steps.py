"""Run as a script with 8 fake CPU devices: one train step of the same model on the same
batch under several meshes; prints JSON {mesh name: {loss, max_param_diff, ...}} where
diffs are against the 1-device run. Used by tests/parallel/test_sharding.py."""
import json
import tempfile

import jax

jax.config.update("jax_num_cpu_devices", 8)
import numpy as np  # noqa: E402

from mmjax.config import default_config  # noqa: E402
from mmjax.train import loop  # noqa: E402

MESHES = {
    "one_device": ({"data": 1}, 1),
    "dp": ({"data": 8}, 8),
    "fsdp": ({"fsdp": 8}, 8),
    "tp": ({"model": 4}, 4),
    "fsdp_tp": ({"fsdp": 2, "model": 4}, 8),
}
MODELS = {
    # A GPT-style decoder with scanned, rematerialised layers, trained with AdamW.
    "gpt": (dict(name="text_transformer", vocab_size=260, max_len=16, width=64, depth=2,
                 num_heads=4, mlp_dim=128, causal=True, scan_layers=True, remat="dots"),
            dict(name="clm"),
            {"text": {"shape": (16,), "dtype": "int32"},
             "text_mask": {"shape": (16,), "dtype": "int32"}}),
    # A ViT classifier with per-layer parameters, with gradient accumulation.
    "vit": (dict(name="vit", image_size=16, patch_size=4, channels=1, width=64, depth=2,
                 num_heads=4, mlp_dim=128, num_classes=10),
            dict(name="supervised"),
            {"image": {"shape": (16, 16, 1), "dtype": "float32"},
             "label": {"shape": (), "dtype": "int32"}}),
}


def batch_for(element, batch_size, rng):
  out = {}
  for key, spec in element.items():
    shape = (batch_size, *spec["shape"])
    if spec["dtype"] == "int32":
      high = 10 if key == "label" else 2 if key == "text_mask" else 260
      out[key] = rng.integers(0, high, size=shape).astype(np.int32)
      if key == "text_mask":
        out[key][:, 0] = 1
    else:
      out[key] = rng.uniform(size=shape).astype(np.float32)
  return out


def one_step(model_name, mesh_shape, n_devices, optimizer, accum, private=False):
  model, objective, element = MODELS[model_name]
  c = default_config()
  if private:   # DP-SGD: per-example clipping and noise drawn once for the whole mesh
    c.privacy.update(enabled=True, noise_multiplier=1.0, clip_norm=0.1,
                     sampling="shuffle")
  c.model = model
  c.objective = objective
  c.mesh.shape = mesh_shape
  c.optim.name = optimizer
  c.optim.learning_rate = 0.1 if optimizer == "sgd" else 1e-3
  c.optim.grad_accum_steps = accum
  c.train.batch_size = 16
  c.train.eval_batch_size = 16
  exp = loop.build_experiment(c, tempfile.mkdtemp(), devices=jax.devices()[:n_devices],
                              element=element)
  state = exp.init_state()
  batch = batch_for(element, 16, np.random.default_rng(0))
  train_step, _ = loop.compile_steps(exp)
  acc = loop.accumulator_factory(exp)()
  from mmjax import parallel
  state, acc = train_step(state, parallel.to_global_batch(batch, exp.mesh,
                                                          exp.batch_sharding), acc)
  exp.checkpointer.close()
  specs = {"/".join(str(getattr(k, "key", k)) for k in path): str(leaf.sharding.spec)
           for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]}
  mu_specs = [str(leaf.sharding.spec) for leaf in jax.tree.leaves(state.opt_state)
              if leaf.ndim >= 2]
  per_device = sum(leaf.addressable_shards[0].data.nbytes
                   for leaf in jax.tree.leaves(state.params))
  total = sum(leaf.nbytes for leaf in jax.tree.leaves(state.params))
  loss = float(jax.device_get(acc["sums"]["loss"]))
  return loss, jax.device_get(state.params), specs, mu_specs, per_device / total


# (model, optimizer, grad_accum_steps, meshes): every strategy on the scanned decoder;
# gradient accumulation with FSDP x TP on the ViT; AdamW's sharded moments under FSDP.
CASES = {
    "gpt_sgd": ("gpt", "sgd", 1, tuple(MESHES)),
    "vit_sgd_accum2": ("vit", "sgd", 2, ("one_device", "fsdp_tp")),
    # Compared with gpt_sgd's one-device loss: the loss is computed before the update.
    "gpt_adamw": ("gpt", "adamw", 1, ("fsdp",)),
    # DP-SGD on the ViT, with accumulation: the noised update must not depend on the mesh.
    "vit_dp_accum2": ("vit", "sgd", 2, ("one_device", "dp", "fsdp")),
}


def main():
  # The first (one-device) run of each model is its reference; for gpt_adamw only the
  # loss compares (parameter updates differ between optimizers).
  results, references = {}, {}
  for case, (model_name, optimizer, accum, meshes) in CASES.items():
    for name in meshes:
      shape, n = MESHES[name]
      private = "_dp" in case
      loss, params, specs, mu_specs, fraction = one_step(model_name, shape, n, optimizer,
                                                         accum, private)
      reference = references.setdefault(model_name + "_dp" * private, (loss, params))
      diff = max(float(np.max(np.abs(a - b))) for a, b in
                 zip(jax.tree.leaves(params), jax.tree.leaves(reference[1])))
      results[f"{case}/{name}"] = {
          "loss": loss, "loss_diff": abs(loss - reference[0]), "max_param_diff": diff,
          "param_specs": specs, "opt_state_specs": sorted(set(mu_specs)),
          "param_bytes_per_device_fraction": fraction}
      if private:   # how far the noised update is from the non-private one
        results[f"{case}/{name}"]["vs_nonprivate"] = max(
            float(np.max(np.abs(a - b))) for a, b in
            zip(jax.tree.leaves(params), jax.tree.leaves(references[model_name][1])))
  results["device_preprocess"] = device_preprocess_diff()
  print("RESULTS " + json.dumps(results))


def device_preprocess_diff():
  """The quickstart's train-time device ops on a 16-example batch split over 8 devices
  against the same batch on one device: every random draw must not depend on the
  sharding. -> {'max_diff', 'output_spec', 'keys'}."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from configs.common import use_multimodal_digits
  from mmjax.data import device_ops
  c = default_config()
  use_multimodal_digits(c)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (16, 28, 28, 1), dtype=np.uint8),
           "audio": rng.integers(-3000, 3000, (16, 2000), dtype=np.int16),
           "label": np.arange(16, dtype=np.int32)}
  sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
  one = device_ops.train_transform(c.data, seed=0)(batch, 3)
  split = device_ops.train_transform(c.data, seed=0, sharding=sharding)(
      {k: jax.device_put(v, sharding) for k, v in batch.items()}, 3)
  return {"max_diff": max(float(np.max(np.abs(np.asarray(one[k]) - np.asarray(split[k]))))
                          for k in one),
          "output_spec": str(split["spectrogram"].sharding.spec),
          "keys": sorted(split)}


if __name__ == "__main__":
  main()
