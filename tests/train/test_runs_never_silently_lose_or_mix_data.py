"""Fault injection: the silent faults (flipped bytes in a checkpoint, an infinite gradient
with a finite loss, a resume under another config, two runs in one workdir, rows of a
killed run, a failed write) are each caught, said, and leave nothing lost or mixed."""
import errno
import json
import os
import random
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mmjax.errors import CheckpointError, ConfigError, NonFiniteLossError
from mmjax.train import checkpoint as checkpoint_lib
from mmjax.train import loop, step as step_lib, workdir_lock
from tests.conftest import files_snapshot
from tests.train.test_loop import assert_trees_equal, final_params


def data_files(step_dir):
  return sorted(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state"))
                for f in fs if os.path.getsize(os.path.join(r, f)) > 4096)


def test_flipped_bytes_inside_a_checkpoint_are_caught_and_it_is_set_aside(tiny_config,
                                                                         tmp_path):
  """1 KiB overwritten in the middle of the newest checkpoint's largest data file, same
  size: its checksums no longer match, so it is set aside (naming the file) and the run
  resumes from the previous one, equal to an unbroken run."""
  unbroken, workdir = str(tmp_path / "unbroken"), str(tmp_path / "run")
  loop.train_and_evaluate(tiny_config(total_steps=30), unbroken)
  loop.train_and_evaluate(tiny_config(total_steps=20), workdir)
  newest = os.path.join(workdir, "checkpoints", "20")
  assert checkpoint_lib.verify_checksums(newest) is None
  assert os.path.exists(os.path.join(newest, checkpoint_lib.CHECKSUM_FILE))
  target = max(data_files(newest), key=os.path.getsize)
  size = os.path.getsize(target)
  with open(target, "r+b") as f:
    f.seek(size // 2)
    f.write(bytes(random.Random(0).getrandbits(8) for _ in range(1024)))
  assert os.path.getsize(target) == size
  assert "content changed" in checkpoint_lib.verify_checksums(newest)
  loop.train_and_evaluate(tiny_config(total_steps=30), workdir)
  set_aside = os.listdir(os.path.join(workdir, "checkpoints_corrupt"))
  assert len(set_aside) == 1 and set_aside[0].startswith("20-")
  assert_trees_equal(final_params(unbroken, 30), final_params(workdir, 30))


def test_a_nonfinite_gradient_or_parameter_is_named_even_with_a_finite_loss():
  finite = [jnp.ones((2, 2)), jnp.zeros(3)]
  assert int(step_lib.nonfinite_code(jnp.float32(1.0), jnp.float32(2.0), finite)) == 0
  assert int(step_lib.nonfinite_code(jnp.float32(3e29), jnp.float32(jnp.inf), finite)) == 2
  bad = [jnp.ones((2, 2)), jnp.array([0.0, jnp.nan, 1.0])]
  assert int(step_lib.nonfinite_code(jnp.float32(1.0), jnp.float32(2.0), bad)) == 3
  assert int(step_lib.nonfinite_code(jnp.float32(jnp.nan), jnp.float32(jnp.inf), bad)) == 1
  assert step_lib.NONFINITE[2] == "the gradient norm"


def test_a_huge_learning_rate_stops_the_run_with_the_last_good_checkpoint(tiny_config,
                                                                          tmp_path):
  workdir = str(tmp_path / "run")
  config = tiny_config(total_steps=40, checkpoint_every=5, log_every=5)
  config.optim.update(dict(learning_rate=1e8, schedule="constant"))
  with pytest.raises(NonFiniteLossError, match=r"(training loss|gradient norm|updated "
                                               r"parameters) became NaN or Inf at step"):
    loop.train_and_evaluate(config, workdir)
  for step in os.listdir(os.path.join(workdir, "checkpoints")):
    params = final_params(workdir, int(step))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params)), step


def test_resuming_with_another_batch_size_is_refused_unless_allowed(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(tiny_config(total_steps=10), workdir)
  before = files_snapshot(workdir)
  changed = tiny_config(total_steps=20, batch_size=16)
  with pytest.raises(ConfigError, match=r"trained to step 10 with another config: "
                                        r"train.batch_size: 32 -> 16.*allow_config_change"):
    loop.train_and_evaluate(changed, workdir)
  assert files_snapshot(workdir) == before
  # Eval settings and total_steps are free to change.
  free = tiny_config(total_steps=15)
  free.evals.loss.max_batches = 1
  loop.train_and_evaluate(free, workdir)
  changed.train.allow_config_change = True
  loop.train_and_evaluate(changed, workdir)
  assert json.load(open(os.path.join(workdir, "config.json")))["train"]["batch_size"] == 16
  assert json.load(open(os.path.join(workdir, "config.step_15.json")))["train"][
      "batch_size"] == 32


def test_a_second_run_in_the_same_workdir_is_refused(tiny_config, tmp_path):
  """A live process holds the lock: refused, naming it, nothing written. A lock left by
  a dead process is taken over."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  lock = workdir / workdir_lock.LOCK_FILE
  try:
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": holder.pid,
                                "started_utc": "2026-12-07 00:00:00"}))
    with pytest.raises(ConfigError, match=rf"Another run uses this workdir: process "
                                          rf"{holder.pid} on this host"):
      loop.train_and_evaluate(tiny_config(total_steps=5), str(workdir))
    assert sorted(os.listdir(workdir)) == [workdir_lock.LOCK_FILE]
  finally:
    holder.kill()
    holder.wait()
  loop.train_and_evaluate(tiny_config(total_steps=5), str(workdir))   # dead: taken over
  assert not lock.exists()   # released at the end
  assert os.listdir(workdir / "checkpoints") == ["5"]


def test_rows_of_a_killed_run_after_its_last_checkpoint_are_dropped(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(tiny_config(total_steps=10, log_every=5), workdir)
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:   # as a killed run leaves
    for step in (15, 20):
      f.write(json.dumps({"step": step, "split": "train", "loss": 9.0}) + "\n")
    f.write('{"step": 25, "spl')   # a line cut short
  loop.train_and_evaluate(tiny_config(total_steps=20, log_every=5), workdir)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  keys = [(r["step"], r["split"]) for r in rows]
  assert len(keys) == len(set(keys))
  assert [r["step"] for r in rows if r["split"] == "train"] == [5, 10, 15, 20]
  assert all(r["loss"] != 9.0 for r in rows)


def test_the_final_checkpoint_is_written_without_checkpoint_every(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(tiny_config(total_steps=7, checkpoint_every=0), workdir)
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["7"]
  assert loop.evaluate(tiny_config(total_steps=7), workdir)["num_examples"] > 0
  off = tiny_config(total_steps=3, checkpoint_every=0, final_checkpoint=False)
  loop.train_and_evaluate(off, str(tmp_path / "off"))
  assert not os.listdir(tmp_path / "off" / "checkpoints")


def test_total_steps_below_the_newest_checkpoint_says_so(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(tiny_config(total_steps=10), workdir)
  with pytest.raises(ConfigError, match=r"total_steps=5 is below the step of the newest "
                                        r"checkpoint .* \(10\)"):
    loop.train_and_evaluate(tiny_config(total_steps=5), workdir)


def test_eval_of_an_empty_workdir_creates_nothing(tiny_config, tmp_path):
  with pytest.raises(CheckpointError, match="No checkpoint in .* to evaluate"):
    loop.evaluate(tiny_config(), str(tmp_path / "empty"))
  assert not os.path.exists(tmp_path / "empty")


def test_a_bad_config_creates_no_workdir(tiny_config, tmp_path):
  config = tiny_config()
  config.adversarial.update(dict(kind="madry", eps=0.1, attack="pgdd"))
  with pytest.raises(ConfigError, match="adversarial.attack='pgdd'"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_a_failed_checkpoint_write_keeps_the_previous_one(tiny_config, tmp_path,
                                                          monkeypatch):
  """ENOSPC while saving step 10: a CheckpointError naming the cause and the kept step."""
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(tiny_config(total_steps=5), workdir)
  before = final_params(workdir, 5)
  real_save = ocp.CheckpointManager.save

  def full_disk(self, step, *args, **kwargs):
    if step == 10:
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
  with pytest.raises(CheckpointError, match=r"step 10.*No space left on device.*step 5"):
    loop.train_and_evaluate(tiny_config(total_steps=10, checkpoint_every=5), workdir)
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["5"]
  assert_trees_equal(before, final_params(workdir, 5))
