"""Adversarial training through the trainer buys real robustness (public robust API)."""
import jax

from mmjax import data
from mmjax.evals.robustness import clean_accuracy, robust_accuracy
from mmjax.train import loop


def train_and_attack(config, workdir, eps_list):
  loop.train_and_evaluate(config, workdir)
  exp = loop.build_experiment(config, workdir)
  state, _ = loop.restore_or_init(exp)
  exp.checkpointer.close()
  batch = next(iter(data.make_eval_iterator(config.data, batch_size=500)))
  x, y = batch["image"], batch["label"]
  logits_fn = lambda x: exp.model.apply({"params": state.params}, {"image": x})["logits"]
  robust = [robust_accuracy(logits_fn, x, y, jax.random.PRNGKey(0), attack="pgd", eps=e,
                            steps=20) for e in eps_list]
  return clean_accuracy(logits_fn, x, y), robust


def test_pgd_training_is_markedly_more_robust_than_standard(tiny_config, tmp_path):
  standard = tiny_config(total_steps=300, checkpoint_every=300, log_every=100)
  adversarial = tiny_config(total_steps=300, checkpoint_every=300, log_every=100)
  adversarial.adversarial.update(dict(kind="madry", attack="pgd", eps=0.1, steps=5,
                                      step_size=0.03))
  clean_std, (std_01, std_03) = train_and_attack(standard, str(tmp_path / "std"), [0.1, 0.3])
  clean_adv, (adv_01, _) = train_and_attack(adversarial, str(tmp_path / "adv"), [0.1, 0.3])
  print(f"standard: clean {clean_std:.3f}, PGD-20 eps 0.1 {std_01:.3f}, eps 0.3 {std_03:.3f}; "
        f"PGD-5 trained: clean {clean_adv:.3f}, PGD-20 eps 0.1 {adv_01:.3f}")
  # Measured 2026-11-25 (best and last PGD iterate alike): clean 0.954 vs 0.970; PGD-20
  # at eps 0.1: 0.192 vs 0.848; the standard model at eps 0.3: 0.000.
  assert clean_std > 0.9 and clean_adv > 0.9
  assert adv_01 > std_01 + 0.4 and adv_01 > 0.7
  assert std_03 < 0.02  # the undefended model falls to ~0 at large eps


