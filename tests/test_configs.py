"""Every config under configs/ trains for a few steps through the real trainer and data."""
import glob
import json
import math
import os

import pytest

from mmjax import models
from mmjax.bench import synthetic
from mmjax.config import load_config_file
from mmjax.train.checks import check_config
from mmjax.errors import ConfigError, DataError
from mmjax.train import curves, loop
from tests import standins

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_files(*parts):
  """The config files in configs/PARTS (not the package's __init__ or common.py)."""
  return sorted(os.path.relpath(p, REPO)
                for p in glob.glob(os.path.join(REPO, "configs", *parts, "*.py"))
                if os.path.basename(p) not in ("__init__.py", "common.py"))

# (config file, arg): every file, plus the extra args a file documents.
# The quickstart has its own, longer test (tests/test_quickstart.py).
CONFIGS = [(p, None) for p in config_files() if not p.endswith("quickstart.py")]
CONFIGS.append(("configs/captions_lm.py", "mlm"))
CONFIGS.append(("configs/multimodal_digits.py", "image_audio"))   # AutoAttack per modality
# configs/own_images.py (a dataset from mmjax.data.prepare, named by its argument) runs
# above with its default, the embedded digits; its argument's refusal is tested below.
# multimodal_digits.py's :siglip, :concat and :bottleneck differ from the default only in
# options that tests/models/test_multimodal.py and tests/objectives cover.
PAPERS = config_files("papers")
CONFIGS += [(p, "tiny") for p in PAPERS]
SCALE = config_files("scale")
CONFIGS += [(p, "tiny") for p in SCALE]
# Fine-tuning configs import MiniLM (the test extra) or a random ViT written in HF format.
FINETUNE = config_files("finetune")
CONFIGS += [(p, "tiny") for p in FINETUNE]


# Per evaluator type: the options that bring it to test size.
TEST_SIZE = {
    "loss": dict(max_batches=1),
    "retrieval": dict(num_examples=16),
    "zero_shot": dict(num_examples=16),
    "caption": dict(num_examples=16),
    "probe": dict(train_examples=32, test_examples=16, steps=10, attack_steps=1),
    # Robust evals run too, at test size (their numbers: tests/evals/test_robust_evaluator).
    "robust": dict(num_examples=16, steps=2, restarts=1, sanity=False, curve_eps=()),
    "fairness": dict(num_examples=32, steps=2),
    "dialogue": dict(num_dialogues=4, rank_dialogues=1, candidates=8, attack_eps=0.0),
    # Its default (0) reads the whole eval split (its numbers: tests/evals/test_report*).
    "report": dict(num_examples=32),
}


def shrink_evals(config, batch_size: int = 16):
  """Every evaluator of the config at test size; AutoAttack as its first member only
  (the members' own budgets)."""
  config.train.eval_batch_size = batch_size
  for entry in config.evals.values():
    entry.update(TEST_SIZE.get(entry.type, {}))
    if entry.type == "robust" and entry.attack == "autoattack":
      entry.update(dict(version="custom", attacks=("apgd-ce",)))


@pytest.mark.parametrize("path, arg", CONFIGS, ids=[f"{p}:{a}" if a else p for p, a in CONFIGS])
def test_config_runs_three_steps(path, arg, digits_data_dir, tmp_path, monkeypatch):
  monkeypatch.setenv("MMJAX_CACHE", str(tmp_path / "cache"))   # generated checkpoints
  config = load_config_file(os.path.join(REPO, path), arg)
  config.data.data_dir = digits_data_dir
  config.data.shuffle_buffer = 256
  config.train.update(dict(total_steps=3, batch_size=16, log_every=1, eval_every=0,
                           checkpoint_every=3))
  config.optim.warmup_steps = 0
  # No PNG curves (~1 s of matplotlib per run, here 58 runs): their drawing is
  # tests/train/test_tracking.py's; below, each config's metrics are checked to form the
  # curves' series.
  config.train.plots = False
  shrink_evals(config)
  if config.adversarial.guard_every:
    config.adversarial.guard_every = 2
  result = loop.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3]
  assert all(math.isfinite(r["loss"]) for r in rows if r["split"] in ("train", "eval"))
  assert math.isfinite(result["loss"])
  assert os.listdir(tmp_path / "checkpoints") == ["3"]
  loss_curves = [n for n in curves.series(curves.read_rows(str(tmp_path)))
                 if curves.family_of(n) == "loss"]
  assert "train/loss" in loss_curves and "eval/loss" in loss_curves, loss_curves
  if any(e.type == "report" for e in config.evals.values()):
    assert os.path.isfile(tmp_path / "reports" / "step_3" / "report.json")


# Paper configs' published-scale variants: valid configs whose real datasets are named
# (and, unprepared here, fail at once with the command that prepares them).
FULL_SIZES = {
    # One line per paper config: (TFDS dataset name, lowest, highest parameter count).
    "fast_at_mnist": ("mnist", 1e4, 1e6),
    "madry_pgd_mnist": ("mnist", 1e4, 1e6),
    "trades_cifar10": ("cifar10", 4.6e7, 4.7e7),
    "fast_at_cifar10": ("cifar10", 1.1e7, 1.2e7),
    "alum_bert": ("wikipedia/20230601.en", 8e7, 9e7),
    "robust_mae": ("cifar10", 5e6, 7e6),
    "clip_vit_b32": ("laion400m/images", 1.73e8, 1.74e8),
    "siglip": ("laion400m/images", 1.72e8, 1.73e8),
    "vit_b16_imagenet": ("imagenet2012", 86_567_656, 86_567_656),
    "mae_vit_b": ("imagenet2012", 1.119e8, 1.1191e8),
    "ast_speech_commands": ("speech_commands", 8.53e7, 8.54e7),
    "simclr_cifar10": ("cifar10", 1.14e7, 1.16e7),
    "rocl_cifar10": ("cifar10", 1.14e7, 1.16e7),
    "madry_pgd_cifar10": ("cifar10", 4.6e7, 4.7e7),
    "gpt2_124m": ("c4/en", 1.244e8, 1.245e8),
    "bert_base_mlm": ("wikipedia/20230601.en", 1.095e8, 1.096e8),
    "lora_glue": ("glue/sst2", 1.097e8, 1.098e8),
    "dp_sgd_mnist": ("mnist", 26_010, 26_010),
}


# Local files a full variant names by environment variable, and the stand-in that lets its
# checks reach the dataset offline.
LOCAL_FILES = {"gpt2_124m": ("MMJAX_GPT2_TOKENIZER", standins.gpt2_like_tokenizer),
               "lora_glue": ("MMJAX_BERT_DIR", standins.bert_base_uncased_standin)}


@pytest.mark.parametrize("path", PAPERS)
def test_paper_config_full_variant_names_its_dataset(path, tmp_path, monkeypatch):
  name = os.path.splitext(os.path.basename(path))[0]
  dataset, low, high = FULL_SIZES[name]
  if name in LOCAL_FILES:
    env, make = LOCAL_FILES[name]
    monkeypatch.setenv(env, make(tmp_path / "local_files"))
  config = load_config_file(os.path.join(REPO, path))
  check_config(config)
  assert config.data.name == dataset
  n = models.param_count(models.abstract_variables(
      models.build_model(config.model), _example(config))["params"])
  assert low <= n <= high, n
  config.data.data_dir = str(tmp_path / "empty_tfds")
  with pytest.raises(DataError, match=dataset.split("/")[0]):
    loop.build_experiment(config, str(tmp_path / "run"))
  with pytest.raises(ConfigError, match=r"takes :full( or :\w+)* or :tiny, got :huge"):
    load_config_file(os.path.join(REPO, path), "huge")


def _example(config):
  """One example batch shaped by the model config (bench's synthetic data shapes)."""
  return synthetic.synthetic_batch(synthetic.element_spec(config), 1)


# Scale-out configs at full size: their parameter counts (GPT-2 XL with the vocabulary
# padded to 50,304; ViT-H/14 as in Dosovitskiy et al.), meshes of 256 devices, and the
# clear error a full-size run gives on this machine.
SCALE_PARAMS = {"gpt2_xl_fsdp": 1_557_686_400, "vit_h14_fsdp": 632_045_800}


@pytest.mark.parametrize("path", SCALE)
def test_scale_config_full_variant(path, tmp_path):
  name = os.path.splitext(os.path.basename(path))[0]
  config = load_config_file(os.path.join(REPO, path))
  n = models.param_count(models.abstract_variables(
      models.build_model(config.model), _example(config))["params"])
  assert n == SCALE_PARAMS[name]
  assert math.prod(config.mesh.shape.values()) == config.plan.devices == 256
  with pytest.raises(ConfigError, match="256 devices but there are 1"):
    loop.build_experiment(config, str(tmp_path / "run"))


# Fine-tuning configs at full size: the published models' parameter counts (BERT-base-
# cased 108,310,272 + a 9-tag token head; ViT-B/16 without the pooler mmjax does not use,
# + a 10-class head), and the clear error when the checkpoint folder is absent.
FINETUNE_FULL = {"bert_ner_conll2003": ("MMJAX_BERT_DIR", "conll2003", 108_317_193),
                 "vit_b16_image_classification": ("MMJAX_VIT_DIR", "cifar10", 85_806_346)}


@pytest.mark.parametrize("name", sorted(FINETUNE_FULL))
def test_finetune_config_full_variant(name, tmp_path, monkeypatch):
  env, dataset, params = FINETUNE_FULL[name]
  monkeypatch.setenv(env, str(tmp_path / "no_such_checkpoint"))
  config = load_config_file(os.path.join(REPO, "configs", "finetune", f"{name}.py"))
  check_config(config)
  assert config.data.name == dataset
  assert config.finetune.init_from == str(tmp_path / "no_such_checkpoint")
  n = models.param_count(models.abstract_variables(
      models.build_model(config.model), _example(config))["params"])
  assert n == params
  with pytest.raises(ConfigError, match="not a Hugging Face checkpoint folder"):
    loop.build_experiment(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_own_images_config_refuses_a_bad_argument():
  config = load_config_file(os.path.join(REPO, "configs/own_images.py"), "my_photos,size=64")
  assert config.data.name == "my_photos" and "resize(64)" in config.data.preprocess_train
  with pytest.raises(ConfigError, match="'colour=3' is not one of classes=K, size=S"):
    load_config_file(os.path.join(REPO, "configs/own_images.py"), "my_photos,colour=3")
