"""The command-line plumbing that mmjax's binaries share (mmjax.main, mmjax.sweep): the
--config flag with its overrides, and user errors as one line with exit status 2."""
from __future__ import annotations

import logging as std_logging
import os
import sys
from typing import Callable, Sequence

from absl import flags
from ml_collections.config_flags import config_flags as _config_flags_impl

from mmjax import config as config_lib
from mmjax.errors import MmjaxError


# accept_new_attributes: an override may add a model field that the config file leaves
# at the model class's default (--config.model.attention=xla), or an adversarial method's
# own option (--config.adversarial.beta=3, checked by the method when built); every other
# unknown key is refused first by config_lib.check_override_keys, with the valid keys
# named. ml_collections allows that only on an unlocked config, so a binary locks it once
# the flags are applied.
class ConfigFileParser(_config_flags_impl.ConfigFileFlagParser):
  """The config file's ConfigDict, plus an entry for each evaluator that a
  --config.evals.NAME.type=TYPE flag adds, so its option flags have a place to go."""

  def parse(self, path):
    config = super().parse(path)
    config_lib.add_new_evaluators(config, sys.argv[1:])
    return config


def define_config_flag():
  """config_flags.DEFINE_config_file('config'), with the parser above: PATH[:ARG] and
  any --config.KEY=VALUE override."""
  flag = _config_flags_impl._ConfigFlag(  # pylint: disable=protected-access
      parser=ConfigFileParser(name="config", lock_config=False),
      serializer=flags.ArgumentSerializer(), name="config", default=None,
      help_string="Config file (python, defining get_config(arg)); PATH[:ARG].",
      flag_values=flags.FLAGS, accept_new_attributes=True)
  return flags.DEFINE_flag(flag, flags.FLAGS)


class OnlyMmjaxInfo(std_logging.Filter):
  """Keeps INFO lines from mmjax itself and WARNING+ from everyone."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    package = os.path.dirname(os.path.abspath(__file__))
    return record.levelno >= std_logging.WARNING or record.pathname.startswith(package)


def fail(message: str) -> None:
  """A user error: one line `mmjax: error: <message>` on stderr, exit status 2."""
  print(f"mmjax: error: {message}", file=sys.stderr)
  sys.exit(2)


def start_data_command(argv: Sequence[str]) -> None:
  """The start of `python -m mmjax.data.prepare|clean`: no positional arguments, INFO logs
  from mmjax only and no tfds progress bars (all of the libraries' with --library_logs)."""
  if len(argv) > 1:
    fail(f"Unexpected arguments {list(argv[1:])}; pass options as --flag=value.")
  from absl import logging   # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.INFO)
  if not os.environ.get("MMJAX_LIBRARY_LOGS"):   # set by parse_flags for --library_logs
    import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
    tfds.disable_progress_bar()
    logging.get_absl_handler().addFilter(OnlyMmjaxInfo())


def model_fields(model_config) -> set[str]:
  # Imported only when a model key is overridden: flax stays out of --help.
  from mmjax import models   # pylint: disable=g-import-not-at-top
  return models.config_fields(model_config)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """Checks the override keys, then parses every flag; a bad key or flag value is a
  one-line user error (exit status 2) instead of absl's traceback. Returns what absl
  leaves over (the program name and positional arguments)."""
  if "--library_logs" in argv:
    os.environ["MMJAX_LIBRARY_LOGS"] = "1"   # read where tfds is imported
  else:
    # Before TensorFlow is imported: its C++ INFO/WARNING lines (the oneDNN notice, ...)
    # are library noise unless asked for.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    config_lib.check_override_keys(argv[1:], model_fields=model_fields)
  except MmjaxError as e:
    fail(str(e))
  try:
    return flags.FLAGS(list(argv))
  except flags.Error as e:
    fail(str(e))


def run(main: Callable[[list[str]], None]) -> None:
  """absl's app.run of `main` on flags parsed by `parse_flags`, so that a bad one (a
  value of the wrong type, an unknown flag, a missing --workdir) is a one-line
  `mmjax: error:` with exit status 2, as every other user error, instead of absl's
  "FATAL Flags parsing error" and status 1."""
  from absl import app
  app.define_help_flags()
  remaining = parse_flags(sys.argv)
  app.run(main, flags_parser=lambda argv: remaining)
