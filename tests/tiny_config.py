"""The tiny CNN config of tests/conftest.py as a config file: --config=THIS:DATA_DIR."""
from tests.conftest import tiny_vit_config


def get_config(data_dir):
  return tiny_vit_config(data_dir)
