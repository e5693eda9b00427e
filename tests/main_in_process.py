"""`python -m mmjax.main ARGS` run inside the test process: the same entry point
(mmjax.main.run: override-key check, absl flag parsing, _main), without a new
interpreter's 2-5 s of imports per call.

absl keeps its flags in one global FlagValues; each call resets it afterwards (values back
to their defaults, the per-override `config.KEY` flags that ml_collections defines while
parsing deleted) and puts logging back as it was, so that calls and other tests stay
independent.
"""
from __future__ import annotations

import io
import logging as std_logging
import sys
from contextlib import redirect_stderr
from unittest import mock


def run_main(*args: str) -> tuple[int, str]:
  """Runs mmjax.main with argv `args`; -> (exit status, its stderr: printed lines and log
  messages, as the binary's).

  A user error is status 2 with its `mmjax: error:` line; any other exception (a bug,
  which the binary would show as a traceback) propagates to the test.
  """
  from absl import flags, logging
  from mmjax import cli, main
  handler = logging.get_absl_handler()
  absl_logger = logging.get_absl_logger()
  # The logger's own level, not get_verbosity(): before any absl flag parsing it is
  # NOTSET (pytest's caplog.at_level on the root then sees INFO records), which
  # set_verbosity cannot express.
  saved = (absl_logger.level, list(handler.filters), list(std_logging.getLogger().handlers))
  stderr = io.StringIO()
  # absl's handler keeps the stream it was made with: log lines are caught here, on absl's
  # logger (app.run's first call drops the root logger's handlers that write to stderr).
  log_lines = std_logging.StreamHandler(stderr)
  log_lines.setFormatter(std_logging.Formatter("%(levelname)s %(filename)s] %(message)s"))
  log_lines.addFilter(cli.OnlyMmjaxInfo())   # as the binary without --library_logs
  absl_logger.addHandler(log_lines)
  try:
    with mock.patch.object(sys, "argv", ["mmjax.main", *args]), redirect_stderr(stderr):
      try:
        main.run()
        code = 0
      except SystemExit as e:
        code = 0 if e.code is None else e.code
  finally:
    flags.FLAGS.unparse_flags()
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:
      delattr(flags.FLAGS, name)
    absl_logger.setLevel(saved[0])   # after unparse_flags, which resets the verbosity
    handler.filters[:] = saved[1]
    std_logging.getLogger().handlers[:] = saved[2]
    absl_logger.removeHandler(log_lines)
  return code, stderr.getvalue()
