"""`clean()`: check the options, load the dataset, find the problems, write the cleaned
copy and the report. The original dataset is only read."""
from __future__ import annotations

import importlib.util
import os
import time
from typing import Any

from mmjax.data.clean import detect, duplicates, filters, load as load_lib, report as report_lib
from mmjax.data.prepare import common
from mmjax.errors import DataError

_LIBRARIES = {"imagehash": "imagehash", "datasketch": "datasketch", "cleanlab": "cleanlab",
              "sklearn": "scikit-learn"}


def check_options(name: str, data_dir: str | None, out_name: str, out_data_dir: str, *,
                  dedup_on: str | None, contamination: str, label_issues: str,
                  overwrite: bool) -> None:
  """Every refusal that needs no data: libraries, names, modes, the output's place."""
  missing = [pkg for mod, pkg in _LIBRARIES.items() if importlib.util.find_spec(mod) is None]
  if missing:
    raise DataError(f"Cleaning needs {', '.join(missing)}: pip install 'mmjax[clean]'.")
  common.check_name(out_name)
  if out_name == name and os.path.abspath(out_data_dir) == os.path.abspath(data_dir or ""):
    raise DataError(f"--out_name={out_name!r} is the dataset being cleaned; the original is "
                    "never modified. Choose another name, e.g. --out_name="
                    f"{name}_clean.")
  if dedup_on not in (None, "image", "text", "audio"):
    raise DataError(f"--dedup_on must be image, text or audio, got {dedup_on!r}.")
  if contamination not in ("drop_train", "keep"):
    raise DataError(f"--contamination must be drop_train or keep, got {contamination!r}.")
  if label_issues not in ("drop", "keep", "off"):
    raise DataError(f"--label_issues must be drop, keep or off, got {label_issues!r}.")
  previous = common.existing(out_name, out_data_dir)
  if previous is not None and not overwrite:
    raise DataError(f"{os.path.join(out_data_dir, out_name)} already exists; mmjax never "
                    "replaces a dataset silently. Pass --overwrite, or choose another "
                    "--out_name.")


def clean(name: str, data_dir: str | None, out_name: str, *, out_data_dir: str | None = None,
          report_dir: str | None = None, dedup_on: str | None = None,
          train_split: str = "train", contamination: str = "drop_train",
          label_issues: str = "drop", overwrite: bool = False, seed: int = 0,
          dup_options: duplicates.Options | None = None,
          filter_options: filters.Options | None = None) -> dict[str, Any]:
  """Writes dataset `out_name` (in `out_data_dir`, default `data_dir`) = `name` minus the
  removed findings, and report.json / report.md / flagged.png in `report_dir` (default
  OUT_DATA_DIR/OUT_NAME_report). Returns the report (without the per-example findings,
  which are in report.json; `findings` holds the Finding objects)."""
  out_data_dir = out_data_dir or data_dir
  if not out_data_dir:
    raise DataError("--out_data_dir (or --data_dir) is required: where the cleaned dataset "
                    "is written.")
  check_options(name, data_dir, out_name, out_data_dir, dedup_on=dedup_on,
                contamination=contamination, label_issues=label_issues, overwrite=overwrite)
  start = time.perf_counter()
  loaded = load_lib.load(name, data_dir)
  if train_split not in loaded.splits:
    raise DataError(f"--train_split={train_split!r} is not a split of {name!r} "
                    f"({sorted(loaded.splits)}).")
  dedup_on = dedup_on or next(m for m in ("image", "audio", "text") if getattr(loaded, m))
  if getattr(loaded, dedup_on) is None:
    raise DataError(f"--dedup_on={dedup_on} but {name!r} has no {dedup_on} feature.")
  findings, extra = detect.find_problems(
      loaded, dedup_on=dedup_on, train_split=train_split,
      dup_options=dup_options or duplicates.Options(),
      filter_options=filter_options or filters.Options(), contamination=contamination,
      label_issues=label_issues, seed=seed)
  removed = {(f.split, f.position) for f in findings if f.remove}
  keep = {s: [p for p in range(len(d.examples)) if (s, p) not in removed]
          for s, d in loaded.splits.items()}
  _write_cleaned(loaded, keep, out_name, out_data_dir, overwrite,
                 f"{name} cleaned by mmjax.data.clean: {len(removed)} examples removed.")
  report_dir = report_dir or os.path.join(out_data_dir, f"{out_name}_report")
  os.makedirs(report_dir, exist_ok=True)
  report = {
      "dataset": name, "data_dir": data_dir, "cleaned": out_name,
      "cleaned_data_dir": out_data_dir, "dedup_on": dedup_on, "train_split": train_split,
      "sizes_before": {s: len(d.examples) for s, d in loaded.splits.items()},
      "sizes_after": {s: len(v) for s, v in keep.items()},
      "counts": report_lib.summarize(findings),
      "contaminated_eval": extra["contaminated_eval"],
      "seconds": {**extra["seconds"], "total": time.perf_counter() - start},
      "label_model": "k-NN (k=10) on PCA-50 features, 5-fold out-of-fold probabilities; "
                     "cleanlab.filter.find_label_issues(prune_by_noise_rate)",
  }
  report_lib.write_json(os.path.join(report_dir, "report.json"), report, findings)
  report_lib.write_markdown(os.path.join(report_dir, "report.md"), report, findings)
  report_lib.write_grid(os.path.join(report_dir, "flagged.png"), loaded, findings)
  return {**report, "report_dir": report_dir, "findings": findings}


def _write_cleaned(loaded, keep, out_name, out_data_dir, overwrite, description) -> None:
  """The kept examples, features and split order as in the original, as `out_name`."""
  import shutil   # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
  root = os.path.join(out_data_dir, out_name)
  if overwrite and os.path.isdir(root):
    shutil.rmtree(root)
  image = loaded.image

  def examples(split):
    data = loaded.splits[split]
    for p in keep[split]:
      ex = dict(data.examples[p])
      if image:   # the original encoded bytes: no re-encoding, exactly the same pixels
        ex[image] = data.encoded_images[p]
      yield p, ex

  features = loaded.builder.info.features
  tfds.dataset_builders.store_as_tfds_dataset(
      name=out_name, version=common.VERSION, features=features, data_dir=out_data_dir,
      split_datasets={s: examples(s) for s in keep if keep[s]}, description=description)
