"""Errors that mmjax reports to users as one clear sentence (cause and fix)."""


class MmjaxError(Exception):
  """Base class: a user-facing error. `mmjax.main` prints it without a traceback."""


class ConfigError(MmjaxError, ValueError):
  """A config key, value, or combination is invalid."""


class DataError(MmjaxError):
  """A dataset is unknown, not prepared, or cannot be read."""


class CheckpointError(MmjaxError):
  """A checkpoint cannot be restored into the configured train state."""


class NonFiniteLossError(MmjaxError):
  """The training loss became NaN or Inf."""
