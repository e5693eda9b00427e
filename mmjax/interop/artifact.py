"""Loading an export (mmjax/interop/export.py) for prediction, checked before use.

    model = load_artifact("WORKDIR/export")      # manifest + checksums verified
    out = model({"image": uint8 [B, 28, 28, 1]}) # -> {'logits', 'probabilities'} [B, K]

A missing, truncated or modified file is one ArtifactError naming the file and the fix,
never a deserialization traceback. Inputs are checked against the manifest (names, shape,
dtype) with an InputError saying what was expected: the HTTP server answers it with 400.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import numpy as np

from mmjax.errors import MmjaxError
from mmjax.interop import export as export_lib


class ArtifactError(MmjaxError):
  """An export directory is missing, incomplete, corrupt or of another format."""


class InputError(MmjaxError, ValueError):
  """Inputs that do not match the model's (unknown or missing name, shape, dtype)."""


_REEXPORT = "re-export it with --mode=export (or copy the whole directory again)"


def read_manifest(directory: str) -> dict:
  """The manifest of the export in `directory`, with every file's size and sha256
  checked against it. Raises ArtifactError naming what is wrong."""
  path = os.path.join(directory, export_lib.MANIFEST)
  if not os.path.isdir(directory):
    raise ArtifactError(f"--artifact={directory} is not a directory. Pass the folder that "
                        "--mode=export wrote (WORKDIR/export).")
  try:
    with open(path) as f:
      manifest = json.load(f)
  except FileNotFoundError:
    raise ArtifactError(f"{directory} holds no {export_lib.MANIFEST}: it is not an mmjax "
                        f"export; {_REEXPORT}.") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ArtifactError(f"{path} is not valid JSON ({e}): the manifest is damaged; "
                        f"{_REEXPORT}.") from None
  if not isinstance(manifest, dict) or manifest.get("format") != export_lib.FORMAT:
    raise ArtifactError(f"{path} is not an {export_lib.FORMAT} manifest (format "
                        f"{manifest.get('format') if isinstance(manifest, dict) else None!r})"
                        f"; {_REEXPORT} with this version of mmjax.")
  expected = manifest.get("files", {})
  actual = export_lib.file_checksums(directory)
  for rel, want in expected.items():
    have = actual.get(rel)
    if have is None:
      raise ArtifactError(f"{os.path.join(directory, rel)} is missing from the export; "
                          f"{_REEXPORT}.")
    if have != want:
      raise ArtifactError(
          f"{os.path.join(directory, rel)} is corrupt: {have['bytes']} bytes with sha256 "
          f"{have['sha256'][:12]}..., the manifest says {want['bytes']} bytes with "
          f"{want['sha256'][:12]}... (a truncated or modified copy); {_REEXPORT}.")
  if export_lib.ARTIFACT not in expected:
    raise ArtifactError(f"The manifest in {directory} lists no {export_lib.ARTIFACT}; "
                        f"{_REEXPORT}.")
  return manifest


def check_inputs(inputs: Any, spec: dict) -> dict[str, np.ndarray]:
  """`inputs` {name: array-like [B, ...]} -> numpy arrays of the manifest's dtypes; raises
  InputError for an unknown or missing name, a wrong shape or a value of another type."""
  if not isinstance(inputs, dict):
    raise InputError(f"Inputs must be an object {{name: array}} with names {sorted(spec)}.")
  unknown, missing = sorted(set(inputs) - set(spec)), sorted(set(spec) - set(inputs))
  if unknown or missing:
    raise InputError(f"Unknown input(s) {unknown} / missing input(s) {missing}: this model "
                     f"takes {sorted(spec)}.")
  arrays, batch = {}, None
  for name, value in inputs.items():
    want = spec[name]
    try:
      array = np.asarray(value)
      if array.dtype.kind not in "biuf":
        raise ValueError(f"values of type {array.dtype}")
      cast = array.astype(want["dtype"])
    except (ValueError, TypeError, OverflowError) as e:
      raise InputError(f"Input {name!r} must be numbers ({want['dtype']}), got {e}.") from None
    if list(cast.shape[1:]) != list(want["shape"][1:]) or cast.ndim != len(want["shape"]):
      raise InputError(f"Input {name!r} has shape {list(cast.shape)}; this model takes "
                       f"{['batch', *want['shape'][1:]]}.")
    if batch is not None and cast.shape[0] != batch:
      raise InputError(f"Inputs hold different numbers of examples ({batch} and "
                       f"{cast.shape[0]} in {name!r}).")
    batch = cast.shape[0]
    arrays[name] = cast
  return arrays


class ServableModel:
  """A model that predicts from inputs named in its manifest, with any batch size.

  `fn` maps {name: [B, ...]} to {output: [B, ...]}; `manifest` says what goes in and out.
  """

  def __init__(self, fn: Callable[[dict], dict], manifest: dict):
    self.manifest = manifest
    self.inputs = manifest["inputs"]
    self.class_names = manifest.get("class_names") or []
    self._fn = jax.jit(fn)

  def __call__(self, inputs: dict) -> dict[str, np.ndarray]:
    """Checked inputs {name: [B, ...]} -> outputs {name: numpy [B, ...]}."""
    arrays = check_inputs(inputs, self.inputs)
    return {k: np.asarray(v) for k, v in jax.device_get(self._fn(arrays)).items()}

  def top_k(self, probabilities: np.ndarray, k: int) -> list[list[dict]]:
    """[B, K] probabilities -> per example the k most likely {'class', 'probability'}."""
    order = np.argsort(-probabilities, axis=-1)[:, :k]
    names = self.class_names or [str(i) for i in range(probabilities.shape[-1])]
    return [[{"class": names[i], "index": int(i), "probability": float(p[i])} for i in row]
            for row, p in zip(order, probabilities)]


def load_artifact(directory: str) -> ServableModel:
  """The jax.export artifact in `directory`, verified against its manifest first."""
  manifest = read_manifest(directory)
  with open(os.path.join(directory, export_lib.ARTIFACT), "rb") as f:
    data = f.read()
  try:
    exported = jax.export.deserialize(bytearray(data))
  except Exception as e:   # checksums matched: a format this jax cannot read
    raise ArtifactError(f"{directory}/{export_lib.ARTIFACT} matches its manifest but jax "
                        f"{jax.__version__} cannot read it ({type(e).__name__}: {e}); it "
                        f"was written by jax {manifest.get('jax_version')}: export again "
                        "with this version.") from None
  platform = jax.default_backend()
  if platform not in exported.platforms:
    raise ArtifactError(f"{directory} was exported for {list(exported.platforms)}, not "
                        f"{platform!r}; export it with --config.export.platforms including "
                        f"{platform!r}.")
  return ServableModel(exported.call, manifest)


def load_checkpoint_model(config, workdir: str, directory: str) -> ServableModel:
  """A checkpoint served without a separate export step: exports it into `directory`
  (jax.export only) and loads that, so both paths run the same function."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.export.dir, config.export.saved_model = directory, False
  export_lib.export_checkpoint(config, workdir)
  return load_artifact(directory)


__all__ = ["ArtifactError", "InputError", "ServableModel", "load_artifact",
           "load_checkpoint_model", "read_manifest", "check_inputs"]
