"""Knowledge distillation's loss is Hinton et al.'s formula computed by hand, from a
teacher read from an mmjax run's checkpoint; ARD's is Goldblum et al.'s; a teacher of
other classes, a missing checkpoint and ARD without a teacher are refused up front."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax import models
from mmjax.errors import CheckpointError, ConfigError
from mmjax.objectives import adversarial, make_objective
from mmjax.train import checkpoint as checkpoint_lib, state as state_lib

TEACHER_MODEL = dict(name="mnist_cnn", num_classes=10)


@pytest.fixture(scope="module")
def teacher_workdir(tmp_path_factory):
  """An mmjax run's workdir holding a (random) mnist_cnn teacher: config.json + one
  checkpoint, written as the trainer writes them."""
  workdir = tmp_path_factory.mktemp("teacher")
  model = models.build_model(TEACHER_MODEL)
  variables = models.init_variables(model, {"image": jnp.zeros((1, 28, 28, 1))},
                                    jax.random.PRNGKey(7))
  state = state_lib.create_train_state(variables, optax.adam(1e-3), jax.random.PRNGKey(0),
                                       ema=False)
  ckpt = checkpoint_lib.Checkpointer(str(workdir), async_save=False)
  ckpt.save(5, state, batches_consumed=5)
  ckpt.close()
  (workdir / "config.json").write_text(json.dumps({"model": TEACHER_MODEL}))
  return str(workdir), model, variables


@pytest.fixture(scope="module")
def student():
  model = models.build_model(dict(name="mnist_cnn", num_classes=10))
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.random((8, 28, 28, 1)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, 8), jnp.int32)}
  variables = models.init_variables(model, {"image": batch["image"][:1]},
                                    jax.random.PRNGKey(1))
  return model, batch, variables


def _hand_kd(student_logits, teacher_logits, labels, t, alpha, hard_logits=None):
  """Hinton et al. (2015) in numpy: alpha T² KL(p_t^T ‖ p_s^T) + (1-alpha) CE."""
  def log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))
  hard = student_logits if hard_logits is None else hard_logits
  log_pt, log_ps = log_softmax(teacher_logits / t), log_softmax(student_logits / t)
  kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(-1)
  ce = -log_softmax(hard)[np.arange(len(labels)), labels]
  return float(np.mean(alpha * t * t * kl + (1 - alpha) * ce))


def test_kd_loss_is_the_hand_formula(teacher_workdir, student):
  workdir, teacher_model, teacher_vars = teacher_workdir
  model, batch, variables = student
  kd = make_objective(dict(name="distillation", teacher_workdir=workdir, temperature=3.0,
                           alpha=0.7), model)
  loss, (metrics, _) = jax.jit(
      lambda p, b: kd(p, b, jax.random.PRNGKey(0), model_state={}, train=True))(
          variables["params"], batch)
  s = np.asarray(model.apply(variables, batch)["logits"])
  t = np.asarray(teacher_model.apply(teacher_vars, batch)["logits"])
  labels = np.asarray(batch["label"])
  assert np.abs(s - t).max() > 0.1   # the two models differ: the KL term is not zero
  np.testing.assert_allclose(float(loss), _hand_kd(s, t, labels, 3.0, 0.7), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["kd/teacher_accuracy"]),
                             np.mean(t.argmax(-1) == labels), atol=1e-6)
  # The teacher is frozen: the loss's gradient reaches only the student's parameters,
  # and the teacher's variables are the checkpoint's.
  np.testing.assert_array_equal(
      np.asarray(kd.teacher.variables["params"]["fc2"]["kernel"]),
      np.asarray(teacher_vars["params"]["fc2"]["kernel"]))


def test_ard_loss_is_goldblum_et_al_and_its_attack_raises_the_kl(teacher_workdir, student):
  workdir, teacher_model, teacher_vars = teacher_workdir
  model, batch, variables = student
  kd = make_objective(dict(name="distillation", teacher_workdir=workdir, temperature=2.0,
                           alpha=0.5), model)
  common = dict(modalities=("image",), attack="pgd", steps=3, step_size=0.05)
  losses = {}
  for eps in (0.0, 0.2):
    ard = adversarial.make_adversarial(dict(kind="ard", eps=eps, **common), kd)
    loss, (metrics, _) = jax.jit(lambda p, b: ard(p, b, jax.random.PRNGKey(0),
                                                  model_state={}, train=True))(
        variables["params"], batch)
    losses[eps] = (float(loss), float(metrics["kd/kl"]))
  s = np.asarray(model.apply(variables, batch)["logits"])
  t = np.asarray(teacher_model.apply(teacher_vars, batch)["logits"])
  # eps = 0: x + δ = x, so ARD's loss is plain distillation's.
  np.testing.assert_allclose(losses[0.0][0], _hand_kd(s, t, np.asarray(batch["label"]),
                                                       2.0, 0.5), rtol=1e-5)
  # eps > 0: the attack found inputs where the student strays further from the teacher.
  assert losses[0.2][1] > losses[0.0][1] * 1.05


def test_teacher_of_other_classes_is_refused(teacher_workdir):
  workdir = teacher_workdir[0]
  five = models.build_model(dict(name="mnist_cnn", num_classes=5))
  with pytest.raises(ConfigError, match=r"10 classes but the student has 5"):
    make_objective(dict(name="distillation", teacher_workdir=workdir), five)


def test_missing_teacher_checkpoint_is_refused(tmp_path, student):
  with pytest.raises(CheckpointError, match="No teacher checkpoint in"):
    make_objective(dict(name="distillation", teacher_workdir=str(tmp_path)), student[0])
  with pytest.raises(ConfigError, match="exactly one teacher"):
    make_objective(dict(name="distillation"), student[0])


def test_ard_needs_a_distillation_objective(student):
  sup = make_objective(dict(name="supervised"), student[0])
  with pytest.raises(ConfigError, match="needs objective.name='distillation'"):
    adversarial.make_adversarial(dict(kind="ard", eps=0.1), sup)


def test_teacher_from_a_hugging_face_folder(tmp_path):
  """A BERT classifier saved in Hugging Face format teaches a text student; the teacher
  logits are the imported model's."""
  from mmjax import interop
  bert = dict(name="text_transformer", vocab_size=64, max_len=8, width=16, depth=1,
              num_heads=2, mlp_dim=32, num_classes=10, norm_position="post",
              embed_norm=True, pooler=True, layer_norm_eps=1e-12, activation="gelu",
              lm_head=False, dropout=0.0, type_vocab_size=2, pool="first")
  batch = {"text": jnp.arange(16, dtype=jnp.int32).reshape(2, 8) % 60 + 2,
           "text_mask": jnp.ones((2, 8), jnp.int32), "label": jnp.array([3, 7])}
  model = models.build_model(bert)
  params = models.init_variables(model, batch, jax.random.PRNGKey(3))["params"]
  folder = interop.save_pretrained(str(tmp_path / "bert"), bert, params)
  kd = make_objective(dict(name="distillation", teacher_hf=folder), model)

  @jax.jit
  def run(p, b):
    _, (metrics, _) = kd(p, b, jax.random.PRNGKey(0), model_state={}, train=False)
    return kd.teacher_logits(b), model.apply({"params": p}, b)["logits"], metrics

  teacher, want, metrics = run(params, batch)
  np.testing.assert_allclose(np.asarray(teacher), np.asarray(want), atol=1e-5)
  # The student is the teacher here: the soft term vanishes.
  assert abs(float(metrics["kd/kl"])) < 1e-6 and float(metrics["kd/agreement"]) == 1.0
