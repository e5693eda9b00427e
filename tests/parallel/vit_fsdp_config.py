"""A tiny ViT trained with data parallelism x FSDP ({'data': 2, 'fsdp': 2}) on the embedded
digits, read as 2 data shards: the same global batches on 1 process or 2.
--config=THIS:DATA_DIR (used by tests/parallel/test_multiprocess.py)."""
from mmjax.config import default_config


def get_config(data_dir):
  c = default_config()
  c.data.data_dir = data_dir
  c.data.shuffle_buffer = 256
  c.data.shards = 2
  c.data.preprocess_train = "to_float|random_crop(28, pad=2)|keep('image', 'label')"
  c.model = dict(name="vit", image_size=28, patch_size=7, width=32, depth=2, num_heads=4,
                 mlp_dim=64, num_classes=10)
  c.mesh.shape = {"data": 2, "fsdp": 2}
  # SGD keeps sharded and unsharded runs equal to float32 round-off; Adam's first steps
  # divide tiny gradients by their own magnitude and amplify it.
  c.optim.update(name="sgd", learning_rate=0.05, schedule="constant")
  c.train.update(total_steps=10, batch_size=16, log_every=1, checkpoint_every=10)
  c.train.eval_batch_size = 200
  c.evals.loss.max_batches = 0   # the whole test split: same on 1 or 2
  return c
