"""mmjax.predict on files a user has (PNG/JPEG, .txt lines, WAV), the HTTP server with
dynamic batching (good and bad requests, it stays up), and damaged exports refused with
one clear error before anything is deserialized."""
import concurrent.futures
import json
import os
import shutil
import threading
import urllib.error
import urllib.request
import wave

import jax
import numpy as np
import pytest
from PIL import Image

from mmjax import models, predict, serve
from mmjax.errors import ConfigError
from mmjax.interop import artifact, export, export_inputs
from tests.conftest import tiny_vit_config


@pytest.fixture(scope="module")
def cnn(tmp_path_factory, digits_data_dir):
  """(export directory, in-process probabilities [1, 28, 28, 1] -> [1, 10]) of a digits
  CNN with random parameters."""
  config = tiny_vit_config(digits_data_dir)
  model = models.build_model(config.model)
  rng = np.random.default_rng(0)   # random values, not the initialiser's (no compile)
  variables = jax.tree.map(
      lambda a: (0.1 * rng.standard_normal(a.shape)).astype(a.dtype),
      models.abstract_variables(model, {"image": np.zeros((1, 28, 28, 1), np.float32)}))
  directory = str(tmp_path_factory.mktemp("cnn_export"))
  export.write_artifacts(directory, model=model, config=config, variables=variables,
                         described=export_inputs.describe(config.data), saved_model=False)
  return directory, jax.jit(lambda x: jax.nn.softmax(
      model.apply(variables, {"image": x})["logits"]))


@pytest.fixture(scope="module")
def loaded(cnn):
  return artifact.load_artifact(cnn[0])


def _probabilities(probabilities, pixels_uint8: np.ndarray) -> np.ndarray:
  """The in-process model's probabilities [K] for one uint8 digit [28, 28, 1]."""
  return np.asarray(probabilities(pixels_uint8.astype(np.float32)[None] / 255.0))[0]


def test_predict_on_png_and_jpeg_gives_the_models_top_k(cnn, loaded, tmp_path):
  _, probabilities = cnn
  rng = np.random.default_rng(0)
  digit = rng.integers(0, 256, (28, 28), dtype=np.uint8)
  Image.fromarray(digit).save(tmp_path / "digit.png")
  # Another size and RGB: converted to the model's one channel and resized to 28 x 28.
  Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(tmp_path / "x.jpg")
  rows = predict.predict_files(loaded, [str(tmp_path / "digit.png"), str(tmp_path / "x.jpg")],
                               top_k=3)
  assert [r["file"] for r in rows] == [str(tmp_path / "digit.png"), str(tmp_path / "x.jpg")]
  want = _probabilities(probabilities, digit[..., None])
  top = rows[0]["top_k"]
  assert [t["index"] for t in top] == list(np.argsort(-want)[:3])
  np.testing.assert_allclose([t["probability"] for t in top], np.sort(want)[::-1][:3],
                             atol=1e-6)
  assert len(rows[1]["top_k"]) == 3 and json.dumps(rows)


def test_predict_refuses_files_of_the_wrong_kind(loaded, tmp_path):
  (tmp_path / "captions.txt").write_text("a thick seven\n")
  (tmp_path / "broken.png").write_bytes(b"not a png")
  (tmp_path / "data.npy").write_bytes(b"")
  for name, words in [("captions.txt", "is a text file, but this model reads images"),
                      ("broken.png", "is not a readable image"),
                      ("data.npy", "a file of unknown kind")]:
    with pytest.raises(ConfigError, match=words):
      predict.predict_files(loaded, [str(tmp_path / name)], top_k=1)


def test_text_lines_and_wav_audio_become_the_raw_features(tmp_path):
  (tmp_path / "c.txt").write_text("a thick seven\n\nthe digit 3\n")
  examples, sources = predict.read_examples(
      [str(tmp_path / "c.txt")], {"caption": {"shape": [], "dtype": "string", "kind": "text"}})
  assert examples == [{"caption": "a thick seven"}, {"caption": "the digit 3"}]
  assert [s["line"] for s in sources] == [1, 3]
  batch = export_inputs.host_batch(examples, "tokenize('caption', 'text', max_len=8)",
                                   {"caption": {"dtype": "string"}},
                                   {"text": {"dtype": "int32"}, "text_mask": {"dtype": "int32"}})
  assert batch["text"].shape == (2, 8) and batch["text_mask"][1].sum() == 8
  stereo = np.arange(-300, 300, dtype=np.int16).reshape(-1, 2)   # 300 frames, 2 channels
  with wave.open(str(tmp_path / "t.wav"), "wb") as f:
    f.setnchannels(2), f.setsampwidth(2), f.setframerate(8000)
    f.writeframes(stereo.astype("<i2").tobytes())
  audio = {"audio": {"shape": [400], "dtype": "int16", "kind": "audio"}}
  (example,), _ = predict.read_examples([str(tmp_path / "t.wav")], audio)
  np.testing.assert_array_equal(example["audio"][:300], stereo.mean(axis=1).astype(np.int16))
  assert example["audio"].shape == (400,) and not example["audio"][300:].any()


def _post(url: str, body: bytes):
  request = urllib.request.Request(url + "/predict", data=body, method="POST")
  try:
    with urllib.request.urlopen(request, timeout=30) as r:
      return r.status, json.load(r)
  except urllib.error.HTTPError as e:
    return e.code, json.load(e)


def test_server_answers_good_and_bad_requests_batches_and_stays_up(cnn, loaded):
  _, probabilities = cnn
  server, batcher = serve.make_server(loaded, port=0, max_batch=4, max_wait_ms=200)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  url = f"http://127.0.0.1:{server.server_address[1]}"
  try:
    digits = np.random.default_rng(1).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    instance = lambda d: {"image": (d / 255.0).tolist()}
    status, reply = _post(url, json.dumps({"instances": [instance(digits[0])],
                                           "top_k": 2}).encode())
    assert status == 200
    want = _probabilities(probabilities, digits[0])
    assert reply["predictions"][0]["top_k"][0]["index"] == int(np.argmax(want))
    np.testing.assert_allclose(reply["predictions"][0]["top_k"][0]["probability"],
                               want.max(), atol=1e-6)
    bad = {
        b"{not json": (400, "not valid JSON"),
        b'{"instances": [{"image": [1, 2]}]}': (400, "has shape"),
        b'{"instances": [{"pixels": [1]}]}': (400, "this model takes ['image']"),
        b'{"instances": [], "extra": 1}': (400, "Unknown field"),
        b'{"instances": [{"image": "abc"}]}': (400, "must be numbers"),
        json.dumps({"instances": [instance(d) for d in digits[:5]]}).encode():
            (413, "at most 4"),
    }
    for body, (code, words) in bad.items():
      status, reply = _post(url, body)
      assert status == code and words in reply["error"], (body[:40], reply)
    # Concurrent clients: every request answered, grouped into fewer model calls.
    before = batcher.batches_run
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      replies = list(pool.map(lambda d: _post(url, json.dumps(
          {"instances": [instance(d)], "top_k": 1}).encode()), digits))
    assert all(status == 200 for status, _ in replies)
    got = [r["predictions"][0]["top_k"][0]["index"] for _, r in replies]
    assert got == [int(np.argmax(_probabilities(probabilities, d))) for d in digits]
    assert batcher.batches_run - before < len(digits)
    with urllib.request.urlopen(url + "/health", timeout=10) as r:
      health = json.load(r)
    assert health["status"] == "ok" and health["examples_run"] == 9
  finally:
    server.shutdown()
    server.server_close()
    batcher.close()


@pytest.mark.parametrize("damage, words", [
    ("truncate", "is corrupt"), ("flip", "is corrupt"), ("no_manifest", "holds no manifest"),
    ("bad_manifest", "not valid JSON"), ("missing_file", "is missing")])
def test_damaged_exports_are_refused_with_the_file_and_the_fix(cnn, tmp_path, damage, words):
  directory = str(tmp_path / "export")
  shutil.copytree(cnn[0], directory)
  path = os.path.join(directory, export.ARTIFACT)
  data = open(path, "rb").read()
  if damage == "truncate":
    open(path, "wb").write(data[:len(data) // 2])
  elif damage == "flip":
    open(path, "wb").write(data[:100] + bytes([data[100] ^ 1]) + data[101:])
  elif damage == "no_manifest":
    os.remove(os.path.join(directory, export.MANIFEST))
  elif damage == "bad_manifest":
    open(os.path.join(directory, export.MANIFEST), "w").write('{"format": ')
  else:
    os.remove(path)
  with pytest.raises(artifact.ArtifactError, match=words) as e:
    artifact.load_artifact(directory)
  assert "--mode=export" in str(e.value)
