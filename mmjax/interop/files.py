"""Reading Hugging Face checkpoint folders: config.json, safetensors files and indexes.

Tensors are read with `safetensors.numpy`, except bfloat16 / float8 ones, which numpy
lacks: those are read from the file's header and bytes as `ml_dtypes` arrays. Damaged,
truncated or missing files are one CheckpointError naming the file and the fix.
"""
from __future__ import annotations

import json
import os

import ml_dtypes
import numpy as np

from mmjax.errors import CheckpointError, ConfigError

SAFETENSORS = "model.safetensors"
INDEX = "model.safetensors.index.json"


# safetensors dtype -> numpy dtype. numpy has no bfloat16 / float8: those come from
# ml_dtypes (a jax dependency), read by `_load_raw` since safetensors.numpy refuses them.
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
           "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
           "BF16": ml_dtypes.bfloat16, "F8_E4M3": ml_dtypes.float8_e4m3fn,
           "F8_E5M2": ml_dtypes.float8_e5m2}
_NOT_NUMPY = ("BF16", "F8_E4M3", "F8_E5M2")
_MAX_HEADER = 100 << 20   # safetensors' own limit on the JSON header


def safetensors_lib():
  try:
    from safetensors import numpy as st   # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ConfigError("Reading Hugging Face checkpoints needs the `safetensors` package: "
                      "pip install safetensors (a dependency of mmjax).") from None
  return st


def read_json(path: str, error: type[Exception] = ConfigError) -> dict:
  """A JSON object from `path`; `error` (naming the file) when it is not one."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise error(f"Cannot read {path!r} as JSON ({e}); the file is damaged. Download or "
                "export the folder again.") from None
  if not isinstance(value, dict):
    raise error(f"{path!r} holds a JSON {type(value).__name__}, not an object.")
  return value


def read_config(path: str) -> dict:
  """The folder's config.json; ConfigError when `path` is not a Hugging Face folder."""
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isdir(path) or not os.path.isfile(cfg_path):
    raise ConfigError(f"{path!r} is not a Hugging Face checkpoint folder (no config.json); "
                      "pass the folder that holds config.json and model.safetensors.")
  return read_json(cfg_path)


def _damaged(file: str, why: str) -> CheckpointError:
  return CheckpointError(f"Cannot read {file!r} ({why}); the file is damaged or not "
                         "safetensors. Download or export it again.")


def _header(file: str) -> tuple[dict, int]:
  """(a safetensors file's header {name: {dtype, shape, data_offsets}}, the byte offset
  of its data), checked against the file's size: a truncated or foreign file is a
  CheckpointError here, before any tensor is read."""
  size = os.path.getsize(file)
  with open(file, "rb") as f:
    prefix = f.read(8)
    n = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
    if not 0 < n <= min(size - 8, _MAX_HEADER):
      raise _damaged(file, "no valid safetensors header")
    try:
      header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError):
      raise _damaged(file, "its header is not JSON") from None
  if not isinstance(header, dict):
    raise _damaged(file, "its header is not a JSON object")
  header.pop("__metadata__", None)
  for name, info in header.items():
    try:
      begin, end = (int(o) for o in info["data_offsets"])
      count = int(np.prod([int(d) for d in info["shape"]]))
      itemsize = np.dtype(_DTYPES[info["dtype"]]).itemsize
    except (KeyError, TypeError, ValueError):
      raise _damaged(file, f"tensor {name!r} has an invalid or unsupported header entry "
                     f"{info!r}") from None
    if end - begin != count * itemsize or not 0 <= begin <= end <= size - 8 - n:
      raise _damaged(file, f"tensor {name!r} lies outside the file (truncated?)")
  return header, 8 + n


def _load_raw(file: str, header: dict, start: int) -> dict[str, np.ndarray]:
  """Tensors of a file with dtypes safetensors.numpy cannot build (bfloat16, float8)."""
  with open(file, "rb") as f:
    data = f.read()
  out = {}
  for name, info in header.items():
    begin, _ = info["data_offsets"]
    dtype = np.dtype(_DTYPES[info["dtype"]])
    shape = tuple(info["shape"])
    out[name] = np.frombuffer(data, dtype, int(np.prod(shape)), start + begin).reshape(shape)
  return out


def _files(path: str) -> list[str]:
  """The folder's safetensors files: model.safetensors, or the shards of its index."""
  single, index = os.path.join(path, SAFETENSORS), os.path.join(path, INDEX)
  if os.path.isfile(single):
    return [single]
  if os.path.isfile(index):
    weight_map = read_json(index, CheckpointError).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
      raise CheckpointError(f"{index!r} has no weight_map; the index is damaged.")
    files = [os.path.join(path, f) for f in sorted(set(weight_map.values()))]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
      raise CheckpointError(f"{index!r} lists shards that are not in the folder: "
                            f"{', '.join(map(os.path.basename, missing))}.")
    return files
  torch_only = os.path.isfile(os.path.join(path, "pytorch_model.bin"))
  hint = (" It has pytorch_model.bin: convert it with transformers' "
          "model.save_pretrained(dir, safe_serialization=True)." if torch_only else "")
  raise CheckpointError(f"{path!r} has no {SAFETENSORS} (or {INDEX}).{hint}")


def read_tensors(path: str) -> dict[str, np.ndarray]:
  """All tensors of model.safetensors, or of the shards a safetensors index lists."""
  st = safetensors_lib()
  tensors = {}
  for file in _files(path):
    header, start = _header(file)
    if any(info["dtype"] in _NOT_NUMPY for info in header.values()):
      tensors.update(_load_raw(file, header, start))
      continue
    try:
      tensors.update(st.load_file(file))
    except Exception as e:   # safetensors raises its own error types
      raise _damaged(file, str(e)) from None
  return tensors


def tensor_shapes(path: str) -> dict[str, tuple[int, ...]]:
  """{tensor name: shape} from the safetensors headers alone (no tensor data is read)."""
  shapes = {}
  for file in _files(path):
    shapes.update({k: tuple(v["shape"]) for k, v in _header(file)[0].items()})
  return shapes
