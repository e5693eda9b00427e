"""`mmjax_colored_digits` prepares offline and its spurious correlation is the one its
module declares: colour agrees with the label on 95% of train and half of test, 25% of
train labels flipped, each image coloured in its colour's channel only."""
import numpy as np
import tensorflow_datasets as tfds

from mmjax.data import pipeline
from mmjax.data.embedded import colored_digits as cd


def test_colored_digits_correlation_matches_the_declared_rates(tmp_path):
  builder = pipeline.get_builder({"name": "mmjax_colored_digits",
                                  "data_dir": str(tmp_path)})
  assert builder.is_prepared()
  for split, agreement, noise in (("train", cd.TRAIN_AGREEMENT, cd.LABEL_NOISE),
                                  ("test", cd.TEST_AGREEMENT, 0.0)):
    ex = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    n = len(ex["label"])
    assert n == (4000 if split == "train" else 1000)
    tol = 3 * np.sqrt(0.25 / n)   # three binomial standard deviations
    assert abs((ex["colour"] == ex["label"]).mean() - agreement) < tol
    assert abs((ex["label"] != (ex["digit"] >= 5)).mean() - noise) < tol
    image = ex["image"].astype(np.int64)
    red, green = ex["colour"] == 0, ex["colour"] == 1
    assert image[red][..., 1:].max() == 0 and image[green][..., [0, 2]].max() == 0
    assert image[red][..., 0].max() == 255 and image[green][..., 1].max() == 255
    # Every (label, colour) group is present: the four groups of the benchmark.
    groups = {(int(l), int(c)) for l, c in zip(ex["label"], ex["colour"])}
    assert groups == {(0, 0), (0, 1), (1, 0), (1, 1)}
