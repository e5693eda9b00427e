"""Reads what a run wrote to TensorBoard, with TensorFlow's own event reader."""
import os


def images(logdir: str) -> list[tuple[str, int, bytes]]:
  """(tag, step, encoded PNG) of every image summary in the event files of `logdir`,
  in file and write order."""
  import tensorflow as tf
  out = []
  for name in sorted(os.listdir(logdir)):
    for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
      for value in event.summary.value:
        if value.HasField("image"):
          out.append((value.tag, event.step, value.image.encoded_image_string))
  return out
