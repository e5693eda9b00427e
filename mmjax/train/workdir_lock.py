"""One run per workdir: a lock file (host, pid, start time) taken before a run writes
anything, released when it ends.

A second run in the same workdir gets a ConfigError naming the holder. A lock left by a
process that no longer exists on this host (a crash, SIGKILL) is taken over with a
warning; one held from another host is refused (a shared filesystem cannot tell whether
that process lives), with the command to remove it by hand.
"""
from __future__ import annotations

import json
import os
import socket
import time

from absl import logging

from mmjax.errors import ConfigError

LOCK_FILE = "run.lock"


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:   # exists, owned by someone else
    return True
  return True


class WorkdirLock:
  """`with WorkdirLock(workdir):` holds the workdir for this process."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.held = False

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def acquire(self) -> None:
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
          "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        self._take_over_if_stale()
        continue
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      self.held = True
      return
    raise ConfigError(f"Could not take the workdir lock {self.path}; remove it if no run "
                      "uses this workdir.")

  def _take_over_if_stale(self) -> None:
    try:
      with open(self.path) as f:
        holder = json.load(f)
    except (OSError, ValueError):
      holder = {}
    host, pid = holder.get("host"), holder.get("pid")
    since = holder.get("started_utc", "?")
    if host == socket.gethostname() and pid == os.getpid():
      # This process built another experiment in this workdir (tests, notebooks,
      # restore scripts): one process cannot race itself.
      os.remove(self.path)
      return
    if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
      logging.warning("Taking over the workdir lock of process %d (started %s UTC), which "
                      "no longer runs on this host.", pid, since)
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
      return
    if not holder:
      raise ConfigError(f"The workdir lock {self.path} is unreadable; if no run uses this "
                        f"workdir, remove it (rm {self.path}) and start again.")
    where = "this host" if host == socket.gethostname() else f"host {host}"
    raise ConfigError(
        f"Another run uses this workdir: process {pid} on {where}, started {since} UTC "
        f"({self.path}). Two runs in one workdir would mix their checkpoints and metrics; "
        f"wait for it, stop it, or use another --workdir. If that run is gone, remove the "
        f"lock: rm {self.path}")

  def release(self) -> None:
    if self.held:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
      self.held = False
