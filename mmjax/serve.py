"""A small local HTTP endpoint for an exported model, with dynamic batching.

    POST /predict   {"instances": [{input: value, ...}, ...], "top_k": 3}
                    -> {"predictions": [{"top_k": [{"class", "index", "probability"}]},
                                        ...]}   (a model without classes: its vectors)
    GET  /health    -> {"status": "ok", "model", "inputs", "outputs", "max_batch", ...}

An instance holds one example per input, without the batch dimension (TF Serving's row
format). Concurrent requests are grouped by one worker thread into batches of up to
`max_batch` examples, waiting at most `max_wait_ms` for more after the first one; each
batch is padded to a power of two, so only log2(max_batch) + 1 shapes ever compile (all
at start). Bad requests get a 4xx with a message; the server stays up.
Started by `python -m mmjax.predict --serve=PORT` (docs/deployment.md).
"""
from __future__ import annotations

import concurrent.futures
import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from absl import logging

from mmjax.interop.artifact import InputError, ServableModel, check_inputs

REQUEST_KEYS = ("instances", "top_k")


def bucket_sizes(max_batch: int) -> list[int]:
  """1, 2, 4, ... up to max_batch (max_batch last even when not a power of two)."""
  sizes = [1]
  while sizes[-1] * 2 < max_batch:
    sizes.append(sizes[-1] * 2)
  return sorted(set(sizes + [max_batch]))


class DynamicBatcher:
  """Groups submitted examples into model batches on one worker thread.

  `submit(arrays {name: [n, ...]})` returns a Future of the outputs {name: [n, ...]};
  a batch closes at `max_batch` examples or `max_wait_ms` after its first request.
  """

  def __init__(self, model: ServableModel, *, max_batch: int, max_wait_ms: float):
    if max_batch < 1 or max_wait_ms < 0:
      raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {max_batch}, "
                       f"{max_wait_ms}.")
    self.model, self.max_batch, self.max_wait = model, max_batch, max_wait_ms / 1000.0
    self.sizes = bucket_sizes(max_batch)
    self.batches_run = self.examples_run = 0
    self._queue: queue.Queue = queue.Queue()
    self._carry = None
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._work, name="mmjax-batcher", daemon=True)
    self._thread.start()

  def warm_up(self) -> None:
    """Compiles every padded batch size once, before the first request."""
    for size in self.sizes:
      self.model({k: np.zeros([size, *v["shape"][1:]], v["dtype"])
                  for k, v in self.model.inputs.items()})

  def submit(self, arrays: dict[str, np.ndarray]) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    self._queue.put((arrays, len(next(iter(arrays.values()))), future))
    return future

  def close(self) -> None:
    self._stop.set()
    self._queue.put(None)
    self._thread.join(timeout=5)

  def _next(self, timeout: float | None):
    if self._carry is not None:
      item, self._carry = self._carry, None
      return item
    return self._queue.get(timeout=timeout)

  def _collect(self) -> list:
    """The requests of one batch: the first blocks, the rest wait until the deadline."""
    first = self._next(None)
    if first is None:
      return []
    items, count = [first], first[1]
    deadline = time.perf_counter() + self.max_wait
    while count < self.max_batch:
      remaining = deadline - time.perf_counter()
      try:
        item = self._next(max(remaining, 0.0))
      except queue.Empty:
        break
      if item is None:
        self._stop.set()
        break
      if count + item[1] > self.max_batch:
        self._carry = item   # starts the next batch
        break
      items.append(item)
      count += item[1]
    return items

  def _work(self) -> None:
    while not self._stop.is_set():
      items = self._collect()
      if not items:
        continue
      try:
        self._run(items)
      except Exception as e:   # pylint: disable=broad-except
        logging.exception("Batch of %d requests failed.", len(items))
        for _, _, future in items:
          future.set_exception(e)

  def _run(self, items: list) -> None:
    count = sum(n for _, n, _ in items)
    size = next(s for s in self.sizes if s >= count)
    names = list(items[0][0])
    batch = {k: np.concatenate([a[k] for a, _, _ in items]) for k in names}
    pad = size - count
    if pad:   # repeat the last row: padding rows never reach a caller
      batch = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in batch.items()}
    outputs = self.model(batch)
    self.batches_run += 1
    self.examples_run += count
    start = 0
    for _, n, future in items:
      future.set_result({k: v[start:start + n] for k, v in outputs.items()})
      start += n


class HttpError(Exception):
  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def parse_request(body: bytes, model: ServableModel, max_batch: int
                  ) -> tuple[dict[str, np.ndarray], int]:
  """A POST /predict body -> (checked inputs {name: [n, ...]}, top_k); HttpError (4xx)
  for anything a client got wrong."""
  try:
    request = json.loads(body)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise HttpError(400, f"The body is not valid JSON ({e}).") from None
  if not isinstance(request, dict) or "instances" not in request:
    raise HttpError(400, 'The body must be an object {"instances": [{input: value}, ...]} '
                    f"with inputs {sorted(model.inputs)}.")
  unknown = sorted(set(request) - set(REQUEST_KEYS))
  if unknown:
    raise HttpError(400, f"Unknown field(s) {unknown}; a request has {list(REQUEST_KEYS)}.")
  instances, top_k = request["instances"], request.get("top_k", 3)
  if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
    raise HttpError(400, f"top_k must be a positive integer, got {top_k!r}.")
  if not isinstance(instances, list) or not instances:
    raise HttpError(400, '"instances" must be a non-empty list of objects.')
  if len(instances) > max_batch:
    raise HttpError(413, f"{len(instances)} instances in one request; at most "
                    f"{max_batch} (the server's max batch). Split the request.")
  if not all(isinstance(i, dict) for i in instances):
    raise HttpError(400, f"Each instance must be an object {{input: value}} with inputs "
                    f"{sorted(model.inputs)}.")
  names = set(model.inputs)
  for i, instance in enumerate(instances):
    if set(instance) != names:
      raise HttpError(400, f"Instance {i} has inputs {sorted(instance)}; this model takes "
                      f"{sorted(names)}.")
  try:
    columns = {k: np.asarray([inst[k] for inst in instances]) for k in names}
    return check_inputs(columns, model.inputs), top_k
  except (InputError, ValueError) as e:
    raise HttpError(400, str(e)) from None


def predictions(model: ServableModel, outputs: dict, top_k: int) -> list[dict]:
  """Model outputs [n, ...] -> one JSON-able prediction per example."""
  n = len(next(iter(outputs.values())))
  if "probabilities" in outputs:
    ranked = model.top_k(outputs["probabilities"], top_k)
    return [{"top_k": ranked[i]} for i in range(n)]
  return [{k: v[i].tolist() for k, v in outputs.items()} for i in range(n)]


def make_handler(model: ServableModel, batcher: DynamicBatcher, max_body_bytes: int):
  """The request handler class of a server for `model`."""

  class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):   # pylint: disable=redefined-builtin
      logging.debug("%s " + format, self.address_string(), *args)

    def _reply(self, status: int, payload: dict) -> None:
      body = json.dumps(payload).encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    def do_GET(self):   # pylint: disable=invalid-name
      if self.path != "/health":
        return self._reply(404, {"error": f"No {self.path}; try GET /health or POST "
                                          "/predict."})
      manifest = model.manifest
      self._reply(200, {"status": "ok", "model": manifest.get("model"),
                        "inputs": manifest["inputs"], "outputs": manifest["outputs"],
                        "class_names": model.class_names, "max_batch": batcher.max_batch,
                        "batches_run": batcher.batches_run,
                        "examples_run": batcher.examples_run})

    def do_POST(self):   # pylint: disable=invalid-name
      try:
        if self.path != "/predict":
          raise HttpError(404, f"No {self.path}; POST /predict.")
        length = int(self.headers.get("Content-Length") or 0)
        if length > max_body_bytes:
          self.close_connection = True   # the unread body must not become a request
          raise HttpError(413, f"Body of {length} bytes; at most {max_body_bytes}.")
        arrays, top_k = parse_request(self.rfile.read(length), model, batcher.max_batch)
        outputs = batcher.submit(arrays).result()
        self._reply(200, {"predictions": predictions(model, outputs, top_k)})
      except HttpError as e:
        self._reply(e.status, {"error": str(e)})
      except Exception as e:   # pylint: disable=broad-except
        logging.exception("Request failed.")
        self._reply(500, {"error": f"{type(e).__name__}: {e}"})

  return Handler


class Server(ThreadingHTTPServer):
  """ThreadingHTTPServer with a listen backlog for many clients: at the default of 5,
  16 clients connecting at once overflowed it, and the kernel's dropped SYNs came back
  as 1 s retries (the p99) or refused connections (docs/deployment.md)."""
  request_queue_size = 256
  daemon_threads = True


def make_server(model: ServableModel, *, port: int, host: str = "127.0.0.1",
                max_batch: int = 32, max_wait_ms: float = 5.0,
                max_body_bytes: int = 8 << 20) -> tuple[Server, DynamicBatcher]:
  """A warmed-up server (not yet serving: call serve_forever) and its batcher; port 0
  picks a free port (server.server_address[1])."""
  batcher = DynamicBatcher(model, max_batch=max_batch, max_wait_ms=max_wait_ms)
  batcher.warm_up()
  return Server((host, port), make_handler(model, batcher, max_body_bytes)), batcher
