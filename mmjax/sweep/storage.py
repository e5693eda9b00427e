"""Where a study lives: a journal file on one machine (WORKDIR/study.journal, the
default) or a relational database for many (sqlite:///..., postgresql://...).

Optuna's JournalStorage appends every change to one file under a file lock, so several
processes on one machine (or on one POSIX filesystem) share a study safely; an RDB
serves workers on many machines. The URL is checked before anything is written:
unreachable storage is a ConfigError naming the URL, the cause and the fix.
"""
from __future__ import annotations

import os

from mmjax.errors import ConfigError

JOURNAL_FILE = "study.journal"
_RDB_SCHEMES = ("sqlite", "postgresql", "mysql")


def describe(url: str, workdir: str) -> str:
  """Where the study lives, for logs and docs: the journal path or the URL without its
  password."""
  if not url:
    return os.path.join(workdir, JOURNAL_FILE)
  import sqlalchemy   # pylint: disable=g-import-not-at-top  (optuna's dependency)
  return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)


def check(url: str, workdir: str) -> None:
  """ConfigError unless the storage `url` ('' = a journal file in `workdir`) can be
  opened: a known scheme, an existing directory for a sqlite file, an installed driver
  and a reachable server for PostgreSQL/MySQL. Writes nothing."""
  if not url:
    return   # the workdir is checked (and created) by the sweep itself
  scheme = url.split(":", 1)[0].split("+", 1)[0]
  if "://" not in url or scheme not in _RDB_SCHEMES:
    raise ConfigError(f"sweep.storage={url!r} is not a storage URL; use '' (a journal "
                      "file WORKDIR/study.journal, one machine), sqlite:///PATH.db or "
                      "postgresql://USER:PASSWORD@HOST:5432/DB (many machines).")
  import sqlalchemy   # pylint: disable=g-import-not-at-top
  try:
    parsed = sqlalchemy.engine.make_url(url)
  except Exception as e:   # sqlalchemy.exc.ArgumentError
    raise ConfigError(f"sweep.storage={url!r} is not a valid URL ({e}).") from None
  shown = parsed.render_as_string(hide_password=True)
  if scheme == "sqlite":
    path = parsed.database or ""
    if not path or path == ":memory:":
      raise ConfigError(f"sweep.storage={shown!r}: an in-memory database dies with the "
                        "process and cannot be shared; name a file, "
                        "sqlite:///DIR/study.db.")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
      raise ConfigError(f"sweep.storage={shown!r}: the directory {directory} does not "
                        f"exist; create it (mkdir -p {directory}) or name another path.")
    if not os.access(directory, os.W_OK):
      raise ConfigError(f"sweep.storage={shown!r}: {directory} is not writable.")
    return
  try:
    parsed.get_dialect().import_dbapi()
  except Exception as e:   # NoSuchModuleError, ImportError
    driver = {"postgresql": "psycopg2-binary (or psycopg, with postgresql+psycopg://)",
              "mysql": "pymysql (with mysql+pymysql://)"}[scheme]
    raise ConfigError(f"sweep.storage={shown!r}: its database driver is not installed "
                      f"({e}); pip install {driver}.") from None
  if not parsed.host:
    raise ConfigError(f"sweep.storage={shown!r} names no host; write "
                      f"{scheme}://USER:PASSWORD@HOST:PORT/DB.")
  engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 10})
  try:
    with engine.connect():
      pass
  except Exception as e:   # sqlalchemy.exc.OperationalError and the driver's own
    reason = str(e).splitlines()[0]
    raise ConfigError(f"sweep.storage={shown!r}: cannot connect to {parsed.host}:"
                      f"{parsed.port or 'default port'} ({reason}). Start the server, "
                      "check host, port, user and password, or use '' (a journal file, "
                      "one machine).") from None
  finally:
    engine.dispose()


def open_storage(url: str, workdir: str):
  """The optuna storage for `url` ('' = JournalStorage on WORKDIR/study.journal)."""
  import optuna   # pylint: disable=g-import-not-at-top
  if url:
    return optuna.storages.RDBStorage(url)
  from optuna.storages import journal   # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, JOURNAL_FILE)
  # The open(O_EXCL) lock: atomic on local disks and on NFSv3 or later, so workers on
  # several machines may share a journal on such a mount (Optuna's docs).
  return optuna.storages.JournalStorage(
      journal.JournalFileBackend(path, lock_obj=journal.JournalFileOpenLock(path)))
