r"""Predictions of an exported model (or a checkpoint) on files, or an HTTP endpoint.

  python -m mmjax.predict --artifact=WORKDIR/export digit.png more.jpg
  python -m mmjax.predict --config=configs/digits_cnn.py --workdir=W digit.png
  python -m mmjax.predict --artifact=DIR captions.txt          # one example per line
  python -m mmjax.predict --artifact=DIR tone.wav
  python -m mmjax.predict --artifact=DIR --serve=8080 [--max_batch=32 --max_wait_ms=5]

Files are read as the raw feature the model's host preprocessing starts from (its
manifest's preprocessing.raw_features): PNG/JPEG/BMP/GIF images (converted to the
feature's channels and resized to its size), .txt lines, 16-bit PCM WAV audio (mono,
padded or cut to the feature's length). The host spec then runs on them as in eval, and
the export's function (with the device ops) does the rest. Prints one JSON object per
example: the file (and line), the top-k classes with probabilities, or the output
vectors of a model without classes. docs/deployment.md.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import wave

import numpy as np
from absl import flags, logging

from mmjax import cli
from mmjax.errors import ConfigError, MmjaxError

# The command's flags, defined when it runs (run()), not at import: importing this module
# (tests, notebooks) next to mmjax.main then defines no second --config, as in
# mmjax.sweep.lr_range.
_CONFIG = _WORKDIR = _ARTIFACT = _TOP_K = _SERVE = _HOST = _MAX_BATCH = _MAX_WAIT_MS = None


def _define_flags() -> None:
  global _CONFIG, _WORKDIR, _ARTIFACT, _TOP_K, _SERVE, _HOST, _MAX_BATCH, _MAX_WAIT_MS
  _CONFIG = cli.define_config_flag()
  _WORKDIR = flags.DEFINE_string("workdir", None, "With --config: predict with the newest "
                                 "checkpoint there (exported on the fly).")
  _ARTIFACT = flags.DEFINE_string("artifact", None, "A directory written by --mode=export.")
  _TOP_K = flags.DEFINE_integer("top_k", 3, "Classes per example in the output.")
  _SERVE = flags.DEFINE_integer("serve", None, "Serve HTTP on this port (0: a free one) "
                                "instead of predicting on files.")
  _HOST = flags.DEFINE_string("host", "127.0.0.1", "--serve: the address to bind.")
  _MAX_BATCH = flags.DEFINE_integer("max_batch", 32, "--serve: most examples per model call.")
  _MAX_WAIT_MS = flags.DEFINE_float("max_wait_ms", 5.0, "--serve: how long a batch waits for "
                                    "more requests after its first.")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
KIND_OF_SUFFIX = {**{s: "image" for s in IMAGE_SUFFIXES}, ".txt": "text", ".wav": "audio"}
KIND_WORDS = {"image": "images (PNG/JPEG/BMP/GIF)", "text": "text (.txt, one example per "
              "line)", "audio": "audio (16-bit PCM .wav)"}


def read_image(path: str, shape) -> np.ndarray:
  """An image file -> uint8 [H, W, C] with the raw feature's channels (and size, when it
  is fixed)."""
  from PIL import Image, UnidentifiedImageError
  height, width, channels = shape
  try:
    with Image.open(path) as img:
      img = img.convert({1: "L", 3: "RGB", 4: "RGBA"}[channels])
      if height and width and img.size != (width, height):
        img = img.resize((width, height), Image.BILINEAR)
      array = np.asarray(img, np.uint8)
  except (UnidentifiedImageError, OSError) as e:
    raise ConfigError(f"{path} is not a readable image ({e}); pass PNG/JPEG files.") from None
  return array.reshape(array.shape[0], array.shape[1], channels)


def read_wav(path: str, shape) -> np.ndarray:
  """A 16-bit PCM WAV -> int16 [S] mono (channels averaged), zero-padded or cut to the
  raw feature's length S when it is fixed."""
  try:
    with wave.open(path, "rb") as f:
      if f.getsampwidth() != 2:
        raise ConfigError(f"{path} has {8 * f.getsampwidth()}-bit samples; mmjax reads "
                          "16-bit PCM WAV. Convert it (e.g. sox in.wav -b 16 out.wav).")
      samples = np.frombuffer(f.readframes(f.getnframes()), "<i2").reshape(
          -1, f.getnchannels())
  except (wave.Error, EOFError) as e:
    raise ConfigError(f"{path} is not a readable WAV file ({e}).") from None
  mono = samples.mean(axis=1).astype(np.int16)
  length = shape[0]
  if length:
    mono = np.pad(mono, (0, max(0, length - len(mono))))[:length]
  return mono


def read_examples(paths, raw: dict) -> tuple[list[dict], list[dict]]:
  """Files -> (raw examples [{feature: value}], where each came from [{'file', 'line'?}]).
  Each file must be of the kind of the model's one raw feature."""
  if len(raw) != 1:
    raise ConfigError(
        f"This model needs {len(raw)} raw features per example ({sorted(raw)}); predict "
        "reads one file per example, so it serves one-input models. Send all inputs "
        "together as JSON to --serve instead (docs/deployment.md).")
  (feature, spec), = raw.items()
  examples, sources = [], []
  for path in paths:
    kind = KIND_OF_SUFFIX.get(os.path.splitext(path)[1].lower())
    if not os.path.isfile(path):
      raise ConfigError(f"{path} does not exist.")
    if kind != spec["kind"]:
      what = {"image": "an image", "text": "a text file", "audio": "an audio file"}.get(
          kind, f"a file of unknown kind (suffixes: {', '.join(KIND_OF_SUFFIX)})")
      raise ConfigError(f"{path} is {what}, but this model reads "
                        f"{KIND_WORDS.get(spec['kind'], spec['kind'])} (its raw feature "
                        f"{feature!r}). Pass files of that kind.")
    if kind == "text":
      with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
          if line.strip():
            examples.append({feature: line.rstrip("\n")})
            sources.append({"file": path, "line": number})
      continue
    read = read_image if kind == "image" else read_wav
    examples.append({feature: read(path, spec["shape"])})
    sources.append({"file": path})
  if not examples:
    raise ConfigError(f"No examples in {list(paths)} (empty text files?).")
  return examples, sources


def predict_files(model, paths, top_k: int) -> list[dict]:
  """One JSON-able prediction per example of `paths` for a ServableModel."""
  from mmjax import serve
  from mmjax.interop import export_inputs
  prep = model.manifest["preprocessing"]
  examples, sources = read_examples(paths, prep["raw_features"])
  inputs = export_inputs.host_batch(examples, prep["host"], prep["raw_features"],
                                    {k: {"dtype": v["dtype"]} for k, v in model.inputs.items()})
  outputs = model(inputs)
  return [{**source, **prediction} for source, prediction
          in zip(sources, serve.predictions(model, outputs, top_k))]


def _load_model(scratch: str):
  from mmjax.interop import artifact
  if bool(_ARTIFACT.value) == bool(_CONFIG.value):
    raise ConfigError("Pass either --artifact=DIR (an export) or --config=C with "
                      "--workdir=W (a checkpoint).")
  if _ARTIFACT.value:
    return artifact.load_artifact(_ARTIFACT.value)
  if not _WORKDIR.value:
    raise ConfigError("--config needs --workdir: the run whose newest checkpoint predicts.")
  _CONFIG.value.lock()
  return artifact.load_checkpoint_model(_CONFIG.value, _WORKDIR.value, scratch)


def _main(argv) -> None:
  files = argv[1:]
  logging.get_absl_handler().addFilter(cli.OnlyMmjaxInfo())
  try:
    if _SERVE.value is None and not files:
      raise ConfigError("Name the files to predict on (or --serve=PORT).")
    if _SERVE.value is not None and files:
      raise ConfigError("--serve takes no files: clients POST them as JSON.")
    if _TOP_K.value < 1:
      raise ConfigError(f"--top_k must be >= 1, got {_TOP_K.value}.")
    with tempfile.TemporaryDirectory(prefix="mmjax_predict_") as scratch:
      model = _load_model(scratch)
      if _SERVE.value is None:
        for row in predict_files(model, files, _TOP_K.value):
          print(json.dumps(row))
        return
      from mmjax import serve
      server, batcher = serve.make_server(model, port=_SERVE.value, host=_HOST.value,
                                          max_batch=_MAX_BATCH.value,
                                          max_wait_ms=_MAX_WAIT_MS.value)
      host, port = server.server_address[:2]
      print(f"Serving {model.manifest.get('model')} on http://{host}:{port} "
            "(POST /predict, GET /health); Ctrl-C stops.", file=sys.stderr, flush=True)
      try:
        server.serve_forever()
      except KeyboardInterrupt:
        pass
      finally:
        server.server_close()
        batcher.close()
  except MmjaxError as e:
    cli.fail(str(e))


def run() -> None:
  _define_flags()
  cli.run(_main)


if __name__ == "__main__":
  run()
