"""`python -m mmjax.data.clean`: a cleaned copy of a dataset plus a report (docs/data.md).

  python -m mmjax.data.clean --name=NAME --data_dir=DIR --out_name=NAME_clean
      [--out_data_dir=DIR] [--report_dir=DIR] [--dedup_on=image|text|audio]
      [--contamination=drop_train|keep] [--label_issues=drop|keep|off] [--overwrite]
"""
from __future__ import annotations

import json

from absl import flags

from mmjax import cli
from mmjax.errors import MmjaxError

_NAME = flags.DEFINE_string("name", None, "The dataset to clean (only read).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Its data_dir.")
_OUT_NAME = flags.DEFINE_string("out_name", None, "The cleaned dataset's name.")
_OUT_DATA_DIR = flags.DEFINE_string("out_data_dir", None, "Where to write it (default "
                                    "--data_dir).")
_REPORT_DIR = flags.DEFINE_string("report_dir", None, "Where report.json/.md and "
                                  "flagged.png go (default OUT_DATA_DIR/OUT_NAME_report).")
_DEDUP_ON = flags.DEFINE_enum("dedup_on", None, ["image", "text", "audio"], "The modality "
                              "compared for duplicates and used for label noise (default: "
                              "image, else audio, else text).")
_TRAIN_SPLIT = flags.DEFINE_string("train_split", "train", "The training split; every other "
                                   "split is checked for contamination against it.")
_CONTAMINATION = flags.DEFINE_enum("contamination", "drop_train", ["drop_train", "keep"],
                                   "Remove train copies of eval examples, or only list them.")
_LABEL_ISSUES = flags.DEFINE_enum("label_issues", "drop", ["drop", "keep", "off"],
                                  "Likely label errors (train split): remove, list, or skip.")
_IMAGE_BITS = flags.DEFINE_integer("image_bits", 6, "Near-duplicate images: phash distance.")
_IMAGE_CHANGED = flags.DEFINE_float("image_changed", 0.01, "... and at most this fraction "
                                    "of pixels (32x32 grey) changed by more than 32/255.")
_TEXT_JACCARD = flags.DEFINE_float("text_jaccard", 0.8, "Near-duplicate texts: MinHash "
                                   "Jaccard similarity.")
_AUDIO_BITS = flags.DEFINE_integer("audio_bits", 4, "Near-duplicate audio: spectrogram "
                                   "phash distance.")
_MIN_CHARS = flags.DEFINE_integer("min_text_chars", 1, "Shorter texts are removed.")
_MAX_CHARS = flags.DEFINE_integer("max_text_chars", 0, "Longer texts are removed (0: none).")
_SILENCE = flags.DEFINE_float("silence_dbfs", -50.0, "Quieter audio (RMS) is removed.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the label model's folds.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --out_name.")
_LIBRARY_LOGS = flags.DEFINE_bool("library_logs", False, "Also show the INFO logs and "
                                  "progress bars of tfds.")
flags.mark_flags_as_required(["name", "out_name"])


def _main(argv) -> None:
  cli.start_data_command(argv)
  from mmjax.data.clean import duplicates, filters, run   # pylint: disable=g-import-not-at-top
  try:
    report = run.clean(
        _NAME.value, _DATA_DIR.value, _OUT_NAME.value, out_data_dir=_OUT_DATA_DIR.value,
        report_dir=_REPORT_DIR.value, dedup_on=_DEDUP_ON.value,
        train_split=_TRAIN_SPLIT.value, contamination=_CONTAMINATION.value,
        label_issues=_LABEL_ISSUES.value, overwrite=_OVERWRITE.value, seed=_SEED.value,
        dup_options=duplicates.Options(_IMAGE_BITS.value, _IMAGE_CHANGED.value,
                                       _TEXT_JACCARD.value, _AUDIO_BITS.value),
        filter_options=filters.Options(_MIN_CHARS.value, _MAX_CHARS.value, _SILENCE.value))
  except MmjaxError as e:
    cli.fail(str(e))
  report.pop("findings")
  print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
  cli.run(_main)
