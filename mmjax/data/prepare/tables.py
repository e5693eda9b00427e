"""Tables of text (`--source=csv|tsv|jsonl`, one row per example) and CoNLL files
(`--source=conll`, one token per line), plus the row reading the other sources share.

csv / tsv / jsonl:
  --text_column=text        the text (a string feature of the same name)
  --label_column=label      class labels ('' for none; several comma-separated), each a
                            ClassLabel of its sorted distinct values
  --tags_column=COL         NER: one tag per whitespace-separated word of the text ->
                            'tokens' Sequence(Text) and 'ner' Sequence(ClassLabel), the
                            features of TFDS conll2003
  --split_column=COL        the split of each row (train / validation|val|dev / test)
conll:
  INPUT is a file, or a folder of files named train* / dev*|valid* / test*; each line
  'TOKEN ... TAG' (the first and last column), a blank line or -DOCSTART- ends a sentence.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Sequence

from mmjax.data.prepare import common
from mmjax.errors import DataError

Row = tuple[dict[str, Any], str]   # (row, 'file:line')


def read_rows(path: str) -> tuple[list[Row], list[str]]:
  """Rows of a CSV, TSV (by extension or a tab in the header) or JSONL file, each with
  'file:line', and the column names in file order."""
  if not os.path.isfile(path):
    raise DataError(f"{path!r} is not a file; this source reads one CSV, TSV or JSONL file.")
  name = os.path.basename(path)
  with open(path, newline="", encoding="utf-8") as f:
    if path.lower().endswith((".jsonl", ".json")):
      rows, columns = [], {}
      for n, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise DataError(f"{name}:{n} is not a JSON object ({e.msg}); a JSONL file has "
                          "one object per line.") from None
        if not isinstance(row, dict):
          raise DataError(f"{name}:{n} is not a JSON object; a JSONL file has one object "
                          "per line.")
        rows.append((row, f"{name}:{n}"))
        columns.update(dict.fromkeys(row))
      return rows, list(columns)
    head = f.readline()
    f.seek(0)
    delimiter = "\t" if path.lower().endswith(".tsv") or "\t" in head else ","
    reader = csv.DictReader(f, delimiter=delimiter)
    rows = [(r, f"{name}:{n}") for n, r in enumerate(reader, 2)]
    return rows, list(reader.fieldnames or [])


def require_column(columns: Sequence[str], column: str, path: str, flag: str) -> None:
  """DataError naming the columns present if `column` is not among them."""
  if column not in columns:
    raise DataError(f"{os.path.basename(path)} has no column {column!r} ({flag}); its "
                    f"columns are {list(columns)}. Pass {flag}=ONE_OF_THEM.")


def _label_feature(values):
  import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
  names = common.class_names(values)
  return tfds.features.ClassLabel(names=names), {n: i for i, n in enumerate(names)}


def row_split(value: Any, where: str) -> str:
  split = common.split_of_folder(str(value).strip())
  if split is None:
    raise DataError(f"{where}: split {value!r} is not one of train, validation (val, dev) "
                    "or test.")
  return split


def text_table(input_path: str, *, text_column: str = "text", label_column: str = "label",
               tags_column: str = "", split_column: str = "", **_) -> common.Source:
  """A CSV / TSV / JSONL file of texts as a Source (options in the module docstring)."""
  import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
  rows, columns = read_rows(input_path)
  if not rows:
    raise DataError(f"{input_path} has no rows.")
  labels = [c.strip() for c in label_column.split(",") if c.strip()]
  for col, flag in ([(text_column, "--text_column")] + [(c, "--label_column") for c in labels]
                    + [(c, f) for c, f in ((tags_column, "--tags_column"),
                                           (split_column, "--split_column")) if c]):
    require_column(columns, col, input_path, flag)
  for row, where in rows:
    for col in [text_column, *labels, *([tags_column] if tags_column else [])]:
      if row.get(col) is None or (col != text_column and str(row[col]).strip() == ""):
        raise DataError(f"{where}: column {col!r} is empty; every row needs a value.")
  features: dict[str, Any] = {text_column: tfds.features.Text()}
  index = {}
  for col in labels:
    features[col], index[col] = _label_feature(str(r[col]).strip() for r, _ in rows)
  if tags_column:
    for row, where in rows:
      words, tags = str(row[text_column]).split(), str(row[tags_column]).split()
      if len(words) != len(tags):
        raise DataError(f"{where}: {len(words)} words but {len(tags)} tags in "
                        f"{tags_column!r}; NER needs one tag per whitespace-separated word.")
    tag_feature, index["ner"] = _label_feature(t for r, _ in rows for t in
                                               str(r[tags_column]).split())
    features["tokens"] = tfds.features.Sequence(tfds.features.Text())
    features["ner"] = tfds.features.Sequence(tag_feature)
  first = labels[0] if labels else None
  items = [common.Item(ref=row, source=where,
                       label=index[first][str(row[first]).strip()] if first else None,
                       split=row_split(row[split_column], where) if split_column else None)
           for row, where in rows]

  def load(item: common.Item) -> dict[str, Any]:
    row = item.ref
    example = {text_column: str(row[text_column])}
    example.update({c: index[c][str(row[c]).strip()] for c in labels})
    if tags_column:
      example["tokens"] = str(row[text_column]).split()
      example["ner"] = [index["ner"][t] for t in str(row[tags_column]).split()]
    return example

  return common.Source(features, items, load,
                       f"Texts from {input_path}: {len(items)} rows.", [input_path])


def _conll_sentences(path: str) -> list[tuple[list[str], list[str], str]]:
  """[(tokens, tags, 'file:line')] of a CoNLL file."""
  out, tokens, tags, start = [], [], [], 1
  name = os.path.basename(path)
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      parts = line.split()
      if not parts or parts[0] == "-DOCSTART-":
        if tokens:
          out.append((tokens, tags, f"{name}:{start}"))
        tokens, tags, start = [], [], n + 1
        continue
      if len(parts) < 2:
        raise DataError(f"{name}:{n}: {line.strip()!r} has no tag; a CoNLL line is "
                        "'TOKEN ... TAG' (first and last whitespace-separated column).")
      tokens.append(parts[0])
      tags.append(parts[-1])
  if tokens:
    out.append((tokens, tags, f"{name}:{start}"))
  return out


def conll(input_path: str, **_) -> common.Source:
  """CoNLL file(s) as a Source with TFDS conll2003's 'tokens' and 'ner' features."""
  import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
  if os.path.isdir(input_path):
    files = [(os.path.join(input_path, f), f) for f in sorted(os.listdir(input_path))
             if not f.startswith(".")]
    splits = {p: common.split_of_folder(f.split(".")[0].split("_")[0].split("-")[0])
              for p, f in files}
    unknown = [f for p, f in files if splits[p] is None]
    if unknown:
      raise DataError(f"{unknown[0]} in {input_path}: a CoNLL folder holds files named "
                      "train* / dev*|valid* / test*, one per split.")
  elif os.path.isfile(input_path):
    splits = {input_path: None}
  else:
    raise DataError(f"--input={input_path!r} is neither a CoNLL file nor a folder of them.")
  items = [common.Item(ref=(tok, tag), source=where, split=split)
           for path, split in splits.items() for tok, tag, where in _conll_sentences(path)]
  if not items:
    raise DataError(f"{input_path} holds no CoNLL sentences (lines 'TOKEN ... TAG').")
  tag_feature, index = _label_feature(t for it in items for t in it.ref[1])
  features = {"tokens": tfds.features.Sequence(tfds.features.Text()),
              "ner": tfds.features.Sequence(tag_feature)}

  def load(item: common.Item) -> dict[str, Any]:
    return {"tokens": item.ref[0], "ner": [index[t] for t in item.ref[1]]}

  return common.Source(features, items, load, f"CoNLL sentences from {input_path}.",
                       list(splits))
