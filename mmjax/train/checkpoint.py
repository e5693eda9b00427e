"""Checkpoints with orbax: async saves, keep-K, automatic resume, corrupt-step fallback.

A checkpoint holds two items: `state` (the TrainState pytree) and `data` (JSON with the
number of batches the run consumed, so the input pipeline resumes at the same batch,
plus what hooks keep beside the state, e.g. the privacy ledger).
Once a save has finished, a SHA-256 of every file in it goes to `mmjax_checksums.json`
in its directory; a restore verifies them first, and a checkpoint whose bytes changed
(bit rot, a partial overwrite) is set aside like an unreadable one, naming the file.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from mmjax.errors import CheckpointError
from mmjax.tree import path_str

CORRUPT_DIR = "checkpoints_corrupt"
CHECKSUM_FILE = "mmjax_checksums.json"


def file_checksums(directory: str) -> dict[str, str]:
  """{path relative to `directory`: sha256 hex} of every file below it (but the checksum
  file itself)."""
  sums = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, directory)
      if rel == CHECKSUM_FILE:
        continue
      with open(path, "rb") as f:
        sums[rel] = hashlib.file_digest(f, "sha256").hexdigest()
  return dict(sorted(sums.items()))


def write_checksums(directory: str) -> None:
  """Writes `directory`'s CHECKSUM_FILE (atomically); nothing when keep-K removed the
  step meanwhile."""
  try:
    sums = file_checksums(directory)
    tmp = os.path.join(directory, CHECKSUM_FILE + ".tmp")
    with open(tmp, "w") as f:
      json.dump(sums, f, indent=0)
    os.replace(tmp, os.path.join(directory, CHECKSUM_FILE))
  except FileNotFoundError:
    pass


def verify_checksums(directory: str) -> str | None:
  """None when the files below `directory` match its checksum file (or it has none: a
  checkpoint from before checksums, or one whose run stopped before writing them), else
  what differs, e.g. 'state/ocdbt.process_0/d/1a2b: content changed'."""
  path = os.path.join(directory, CHECKSUM_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    want = json.load(f)
  have = file_checksums(directory)
  for rel, digest in want.items():
    if rel not in have:
      return f"{rel}: missing"
    if have[rel] != digest:
      return f"{rel}: content changed (sha256 {have[rel][:12]}..., written {digest[:12]}...)"
  return None


def _shapes_by_path(tree: Any) -> dict[str, tuple]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {path_str(p): tuple(getattr(x, "shape", np.shape(x))) for p, x in leaves}


def require_checkpoints(workdir: str) -> None:
  """CheckpointError, before anything is built or created, when `workdir` holds no
  checkpoint step directory (--mode=eval on a fresh or mistyped workdir)."""
  directory = os.path.join(os.path.abspath(os.path.expanduser(workdir)), "checkpoints")
  steps = [d for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(directory) else []
  if not steps:
    raise CheckpointError(f"No checkpoint in {directory} to evaluate. Train first with "
                          "--mode=train and the same --workdir (or check the --workdir).")


class Checkpointer:
  """Saves and restores (TrainState, data position) under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
    self.workdir = workdir
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep or None, create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)
    # Handlers named up front, so a fresh manager can read metadata before any save.
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": ocp.JsonCheckpointHandler()})
    self._closed = False
    self._unsummed: list[int] = []   # saves whose checksums are not yet asked for
    self._summer = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="mmjax-checksums")
    self._summing: list[concurrent.futures.Future] = []
    # The JSON `data` item of the checkpoint the last restore_latest returned.
    self.restored_data: dict = {}

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, batches_consumed: int,
           extra: dict | None = None) -> None:
    """Starts an asynchronous save; returns once the arrays are copied off the devices.
    The previous save is finished (and its checksums written) first. `extra`: more
    JSON-able entries of the `data` item (restored as `restored_data`)."""
    self.wait()
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave({**(extra or {}),
                                  "batches_consumed": int(batches_consumed)})))
    except OSError as e:
      raise self._write_error(step, e) from None
    self._unsummed.append(step)

  def _write_error(self, step: int, error: OSError) -> CheckpointError:
    kept = [s for s in self.all_steps() if s != step]
    last = (f"the last good checkpoint (step {kept[-1]}) is kept" if kept
            else "no earlier checkpoint exists")
    return CheckpointError(
        f"Could not write the checkpoint of step {step} in {self.directory}: "
        f"{error.strerror or error}. Training stopped; {last}. Free space (or fix the "
        "cause) and rerun the same command to resume.")

  def wait(self) -> None:
    """Waits for pending saves; process 0 then writes their checksums on a background
    thread (reading a checkpoint back would otherwise stall the train step)."""
    steps, self._unsummed = self._unsummed, []
    try:
      self._manager.wait_until_finished()
    except OSError as e:   # an asynchronous write that failed
      raise self._write_error(steps[-1] if steps else -1, e) from None
    if jax.process_index() == 0:
      self._summing += [self._summer.submit(write_checksums, os.path.join(
          self.directory, str(step))) for step in steps]

  def close(self) -> None:
    """Waits for pending saves and their checksums, and closes; a second call does
    nothing."""
    if self._closed:
      return
    self._closed = True
    self.wait()
    for future in self._summing:
      future.result()
    self._summer.shutdown()
    self._manager.close()

  def restore_latest(self, abstract_state: Any) -> tuple[Any, int, int] | None:
    """Restores the newest good checkpoint as (state, batches_consumed, step), or None.

    `abstract_state` is a pytree of jax.ShapeDtypeStruct (with shardings) of the state
    the config builds. A newest checkpoint that cannot be read (partial or corrupted) is
    moved to `<workdir>/checkpoints_corrupt/` with a warning, and the previous one is
    tried. A checkpoint whose shapes differ from the config raises CheckpointError
    before anything is loaded or changed.
    """
    for step in reversed(self.all_steps()):
      try:
        stored = self._manager.item_metadata(step)["state"]
        stored_shapes = _shapes_by_path(getattr(stored, "tree", stored))
        if not stored_shapes:
          raise ValueError("no array metadata")
      except Exception as e:  # unreadable metadata: a corrupted or partial checkpoint
        self._set_aside(step, e)
        continue
      self._check_compatible(step, stored_shapes, _shapes_by_path(abstract_state))
      changed = verify_checksums(os.path.join(self.directory, str(step)))
      if changed is not None:
        self._set_aside(step, ValueError(f"checksum mismatch: {changed}"))
        continue
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
      except Exception as e:
        self._set_aside(step, e)
        continue
      self.restored_data = dict(restored["data"])
      return restored["state"], int(restored["data"]["batches_consumed"]), step
    return None

  def _check_compatible(self, step: int, stored: dict, wanted: dict) -> None:
    missing = sorted(set(wanted) - set(stored))
    extra = sorted(set(stored) - set(wanted))
    differ = [(k, stored[k], wanted[k]) for k in sorted(set(stored) & set(wanted))
              if stored[k] != wanted[k]]
    if not (missing or extra or differ):
      return
    details = [f"{k}: checkpoint {a} vs config {b}" for k, a, b in differ[:3]]
    details += [f"{k}: not in the checkpoint" for k in missing[:3]]
    details += [f"{k}: not in the config" for k in extra[:3]]
    raise CheckpointError(
        f"The checkpoint at step {step} in {self.directory} does not fit the configured "
        f"model ({len(differ)} shape mismatches, {len(missing)} missing, {len(extra)} "
        f"unexpected; e.g. {'; '.join(details)}). Train with the config that wrote it, or "
        f"use a new --workdir. Nothing was changed on disk.")

  def _set_aside(self, step: int, error: Exception) -> None:
    src = os.path.join(self.directory, str(step))
    dst_root = os.path.join(os.path.dirname(self.directory), CORRUPT_DIR)
    os.makedirs(dst_root, exist_ok=True)
    dst = os.path.join(dst_root, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    logging.warning("Checkpoint at step %d is unreadable (%s: %s); moved it to %s and "
                    "trying the previous one.", step, type(error).__name__,
                    str(error).splitlines()[0][:200] if str(error) else "", dst)
    shutil.move(src, dst)
    self._manager.reload()
