"""`python -m mmjax.data.prepare`: local files -> a TFDS dataset (docs/data.md).

  python -m mmjax.data.prepare --source=image_folder|csv|tsv|jsonl|conll|wav_folder|npz|
      idx|pairs --input=PATH --name=NAME --data_dir=DIR [--split_fraction=0.2 --seed=0]
      [--resize=HxW] [--on_error=stop|skip] [--overwrite] [source options]
"""
from __future__ import annotations

import json

from absl import flags

from mmjax import cli
from mmjax.data.prepare import SOURCES, prepare
from mmjax.errors import MmjaxError

_SOURCE = flags.DEFINE_enum("source", None, SOURCES, "What --input holds.")
_INPUT = flags.DEFINE_string("input", None, "The folder or file to read.")
_NAME = flags.DEFINE_string("name", None, "The dataset's name (snake_case): "
                            "--config.data.name.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where to write it: "
                                "--config.data.data_dir.")
_SPLIT_FRACTION = flags.DEFINE_float("split_fraction", 0.2, "Fraction (per class) of the "
                                     "examples whose source names no split that go to "
                                     "--eval_split.")
_EVAL_SPLIT = flags.DEFINE_enum("eval_split", "test", ["test", "validation"],
                                "The split --split_fraction fills.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the split and the order on disk.")
_RESIZE = flags.DEFINE_string("resize", None, "HxW: write every image at this size (needed "
                              "when sizes differ).")
_ON_ERROR = flags.DEFINE_enum("on_error", "stop", ["stop", "skip"], "Unreadable files: "
                              "refuse (naming them) or leave them out.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a different dataset of that "
                               "name in --data_dir.")
_CAPTIONS = flags.DEFINE_string("captions", None, "image_folder: CSV/JSONL of file,caption.")
_TEXT = flags.DEFINE_string("text_column", "text", "csv/tsv/jsonl: the text column.")
_LABEL = flags.DEFINE_string("label_column", "label", "csv/tsv/jsonl/pairs: label "
                             "column(s), comma-separated; '' for none.")
_TAGS = flags.DEFINE_string("tags_column", "", "csv/tsv/jsonl: NER tags, one per word.")
_SPLIT_COLUMN = flags.DEFINE_string("split_column", "", "csv/tsv/jsonl/pairs: a column "
                                    "naming each row's split (pairs: 'split' if present).")
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate", 8000, "wav_folder/pairs: resample audio "
                                    "to this rate (Hz).")
_LIBRARY_LOGS = flags.DEFINE_bool("library_logs", False, "Also show the INFO logs and "
                                  "progress bars of tfds.")
flags.mark_flags_as_required(["source", "input", "name", "data_dir"])


def _main(argv) -> None:
  cli.start_data_command(argv)
  options = dict(text_column=_TEXT.value, label_column=_LABEL.value,
                 tags_column=_TAGS.value, sample_rate=_SAMPLE_RATE.value)
  if _CAPTIONS.value:
    options["captions"] = _CAPTIONS.value
  if _SPLIT_COLUMN.value or _SOURCE.value != "pairs":
    options["split_column"] = _SPLIT_COLUMN.value
  try:
    _, summary = prepare(_SOURCE.value, _INPUT.value, _NAME.value, _DATA_DIR.value,
                         split_fraction=_SPLIT_FRACTION.value, seed=_SEED.value,
                         eval_split=_EVAL_SPLIT.value, on_error=_ON_ERROR.value,
                         overwrite=_OVERWRITE.value, resize=_RESIZE.value, **options)
  except MmjaxError as e:
    cli.fail(str(e))
  print(json.dumps(summary, indent=1, default=str))
  print(f"Train on it with --config.data.name={summary['name']} "
        f"--config.data.data_dir={summary['data_dir']}")


if __name__ == "__main__":
  cli.run(_main)
