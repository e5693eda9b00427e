"""Shared fixtures. Tests run on CPU; multi-device tests start subprocesses."""
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The same small models compile in many tests, in both xdist workers and in subprocesses
# (which inherit the environment): a persistent compilation cache shared by all of them
# compiles each computation once (tests/train + test_main: 200 s -> 150 s from cold).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"mmjax_tests_xla_cache_{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

import pytest  # noqa: E402

# The longest single tests (30-90 s each on 2 cores), run first: xdist deals tests to its
# two workers in collection order, and one of these at the end of the queue left a worker
# alone on it while the other sat idle. Tests sharing a module-scoped fixture stay where
# they are: dealt out early they would be split across workers and run the fixture twice.
RUN_FIRST = ("tests/test_quickstart.py::",
             "tests/test_main.py::test_sigkill",
             "tests/test_configs.py::test_config_runs_three_steps",
             "tests/train/test_adversarial_training_buys_robustness.py::")


def pytest_collection_modifyitems(items):
  """Longest-first: the RUN_FIRST tests in front, everything else in collection order."""
  rank = lambda item: next((i for i, p in enumerate(RUN_FIRST) if item.nodeid.startswith(p)),
                           len(RUN_FIRST))
  items.sort(key=rank)


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory):
  """A TFDS data_dir with the embedded `mmjax_digits` dataset prepared (offline)."""
  from mmjax.data.embedded.digits import ensure_prepared
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  ensure_prepared(data_dir)
  return data_dir


def tiny_vit_config(data_dir, **train):
  """A seconds-sized CNN classification config on the embedded digits."""
  from mmjax.config import default_config
  c = default_config()
  c.data.data_dir = data_dir
  c.data.shuffle_buffer = 512
  c.data.preprocess_train = "to_float|random_crop(28, pad=2)|keep('image', 'label')"
  c.model = dict(name="mnist_cnn", num_classes=10)
  c.objective = dict(name="supervised")
  c.optim.learning_rate = 3e-3
  # Constant, so that a run stopped at step k is a prefix of a longer run.
  c.optim.schedule = "constant"
  c.train.update(dict(total_steps=30, batch_size=32, log_every=5, eval_every=0,
                      checkpoint_every=10))
  # No PNG curves at the end of each of the many short runs built on this (~1 s of
  # matplotlib each): tests/train/test_tracking.py turns them on and checks them.
  c.train.plots = False
  c.train.update(train)
  c.train.eval_batch_size = 500
  return c


@pytest.fixture
def tiny_config(digits_data_dir):
  return lambda **train: tiny_vit_config(digits_data_dir, **train)


def tiny_cnn(batch_size):
  """(model, batch, variables): the MNIST CNN with a random batch of `batch_size` digits."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from mmjax import models
  model = models.build_model(dict(name="mnist_cnn", num_classes=10))
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.uniform(size=(batch_size, 28, 28, 1)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, size=batch_size), jnp.int32)}
  return model, batch, models.init_variables(model, batch, jax.random.PRNGKey(0))


def files_snapshot(root):
  """{path: bytes} of every file under `root`: to prove a failed run changed nothing."""
  return {os.path.join(r, f): open(os.path.join(r, f), "rb").read()
          for r, _, fs in os.walk(root) for f in fs}
