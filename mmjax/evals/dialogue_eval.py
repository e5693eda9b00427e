"""Visual dialogue with each eval (`type: dialogue`): answers generated turn by turn,
ranked among candidates, with and without the history, clean and under attack.

For the first `num_dialogues` eval dialogues (the `dialogue_tokens` op's rows), every
turn k is answered greedily by the caption decoder from its prompt: the image, the
earlier turns with their true answers, and question k. Metrics (after the prefix):

  exact_match, token_f1                 over all turns (`dialogue_metrics`);
  exact_match/<turn type>               per type of `mmjax_visdial_digits`;
  exact_match/needs_history,
  exact_match/no_history_needed         split by history dependence;
  mrr, r@1, r@5, r@10, mean_rank, ndcg  VisDial's ranking metrics over the first
                                        `rank_dialogues` dialogues: `candidates` answers
                                        per turn (the true one + others drawn, seeded,
                                        from the dataset's answers and their
                                        paraphrases), scored by the decoder's
                                        log-likelihood; relevance 1 for the true answer
                                        and its paraphrases (NDCG);
  chance/mrr, chance/r@1, chance/mean_rank   the same for random scores;
  ablated/...                           all of the above with the earlier turns masked
                                        from the decoder (`ablate_history`);
  attack/exact_match, attack/exact_match/needs_history, attack/flipped
                                        with `attack_eps` > 0: answers on images under a
                                        PGD attack (L-inf, `attack_steps`) maximising the
                                        dialogue's answer NLL; `flipped` is the share of
                                        turns whose generated answer changed.
Files (`output_dir('dialogue')`): step_N.json with the metrics and the first
`samples` dialogues turn by turn (question, truth, answers with/without history, under
attack).
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import logging

from mmjax import attacks
from mmjax.data import dialogue as dialogue_data
from mmjax.errors import ConfigError
from mmjax.evals import decoding, dialogue_metrics as dm
from mmjax.evals.base import Evaluator, register_evaluator
from mmjax.evals.batched import eval_examples, in_chunks, model_variables
from mmjax.objectives import dialogue as dialogue_obj

# Generated answers stop after this many tokens (the longest answer is 5 words + EOS).
MAX_ANSWER_TOKENS = 8
_BUCKET = 16   # candidate rows are cut to a multiple of this many tokens (few compiles)


@register_evaluator("dialogue")
class DialogueEvaluator(Evaluator):
  """See the module docstring."""
  options = dict(num_dialogues=100, rank_dialogues=40, candidates=100,
                 ablate_history=True, attack_eps=0.0, attack_steps=10, samples=3,
                 key="dialogue", seed=0)

  @classmethod
  def check_options(cls, options, key, config):
    if options.num_dialogues < 1:
      raise ConfigError(f"{key}.num_dialogues={options.num_dialogues} must be positive.")
    if not 0 <= options.rank_dialogues <= options.num_dialogues:
      raise ConfigError(f"{key}.rank_dialogues={options.rank_dialogues} must be in [0, "
                        f"num_dialogues={options.num_dialogues}] (0: no ranking).")
    if options.candidates < 2:
      raise ConfigError(f"{key}.candidates={options.candidates} must be >= 2 (the true "
                        "answer and at least one other; VisDial uses 100).")
    if options.attack_eps < 0 or options.attack_steps < 1:
      raise ConfigError(f"{key}: attack_eps={options.attack_eps} must be >= 0 (0: no "
                        f"attack) and attack_steps={options.attack_steps} >= 1.")

  def __init__(self, exp, name, options):
    super().__init__(exp, name, options)
    cfg, model = options, exp.model
    dialogue_obj.check_decoder(model, self.key)
    from mmjax.data.embedded import visdial_digits as vd  # pylint: disable=g-import-not-at-top
    pool = vd.answer_pool()
    if cfg.candidates > len(pool):
      raise ConfigError(f"{self.key}.candidates={cfg.candidates} exceeds the {len(pool)} "
                        "distinct answers of mmjax_visdial_digits (with paraphrases).")
    ex = eval_examples(self.data_config, cfg.num_dialogues, self.batch_size,
                       require_label=False)
    names = ("image", cfg.key, f"{cfg.key}_turn", f"{cfg.key}_target", "turn_type",
             "needs_history")
    missing = [k for k in names if k not in ex]
    if missing:
      raise ConfigError(f"{self.key} needs eval examples with {list(names)}; they lack "
                        f"{missing}: keep them in config.data.preprocess_eval after "
                        "dialogue_tokens(...).")
    dialogue_obj.check_length(model, ex[cfg.key].shape[1], self.key)
    self.model = exp.model_logits
    self.images = np.asarray(ex["image"], np.float32)
    self.tokens = np.asarray(ex[cfg.key], np.int32)
    self.turn = np.asarray(ex[f"{cfg.key}_turn"], np.int32)
    target = np.asarray(ex[f"{cfg.key}_target"], np.int32)
    self.num_turns = int(self.turn.max()) + 1
    self.types = [vd.TURN_TYPES[int(t)] for t in np.asarray(ex["turn_type"]).ravel()]
    self.needs_history = np.asarray(ex["needs_history"], bool).ravel()
    n, k, length = len(self.tokens), self.num_turns, self.tokens.shape[1]
    self.starts = np.stack([dialogue_data.answer_start(self.turn, target, t)
                            for t in range(k)], 1)                       # [N,K]
    self.questions, self.truths = [], []
    for i in range(n):
      for t in range(k):
        where, row = self.turn[i] == t, self.tokens[i]
        # The answer's EOS is its last target token, so decode reads it all.
        self.questions.append(dialogue_data.decode(row[where & (target[i] == 0)]))
        self.truths.append(dialogue_data.decode(row[where & (target[i] == 1)]))
    # Decoding rows, dialogue-major (row i * K + t answers turn t of dialogue i), cut to
    # the longest prompt plus the longest answer: one shape, one compile.
    start = self.starts.reshape(-1)
    cut = min(length, int(start.max()) + MAX_ANSWER_TOKENS + 1)
    pos = np.arange(cut)[None]
    self.prompts = {
        "prompt": np.repeat(self.tokens[:, :cut], k, 0), "prompt_len": start,
        "turn": np.where(pos < start[:, None], np.repeat(self.turn[:, :cut], k, 0),
                         np.tile(np.arange(k), n)[:, None]).astype(np.int32)}
    self.candidates = self._candidates(vd, pool, min(cfg.rank_dialogues, n), length)
    self.memory = jax.jit(lambda v, x: model.apply(v, x, method="caption_memory"))
    self.decode = jax.jit(lambda v, *a: _decode(model, v, *a))
    self.score = jax.jit(lambda v, *a: _score(model, v, *a))
    self.target = target
    self.attack = jax.jit(lambda v, d: _attack(model, v, d, cfg.attack_eps,
                                               cfg.attack_steps, cfg.seed))

  def _candidates(self, vd, pool, num, length) -> list[dict]:
    """Per turn k: the candidate rows of the first `num` dialogues (C per turn), cut to
    a multiple of _BUCKET tokens: {'index' [M] dialogue, 'tokens', 'turn', 'mask'
    [M, L], 'true' [num] true index, 'relevance' [num, C]}."""
    cfg, out = self.cfg, []
    if num == 0:
      return out
    for t in range(self.num_turns):
      rows, answers, true, relevance = [], [], [], []
      for i in range(num):
        truth = self.truths[i * self.num_turns + t]
        rng = np.random.default_rng((cfg.seed, i, t))
        others = [a for a in pool if a != truth]
        picked = [others[j] for j in rng.choice(len(others), cfg.candidates - 1,
                                                replace=False)]
        slot = int(rng.integers(cfg.candidates))
        cands = picked[:slot] + [truth] + picked[slot:]
        answers += cands
        rows += [i] * len(cands)
        true.append(slot)
        relevance.append([float(vd.canonical(c) == vd.canonical(truth)) for c in cands])
      rows = np.array(rows)
      start = self.starts[rows, t]
      need = int(start.max()) + max(len(dialogue_data.split_words(a)) for a in answers) + 1
      cut = min(length, -(-need // _BUCKET) * _BUCKET)
      tokens, mask = dialogue_data.with_answers(self.tokens[rows], start, answers, cut)
      pos = np.arange(cut)[None]
      turn = np.where(pos < start[:, None], self.turn[rows, :cut],
                      np.where(mask > 0, t, -1)).astype(np.int32)
      out.append({"index": rows, "tokens": tokens, "turn": turn, "mask": mask,
                  "true": np.array(true), "relevance": np.array(relevance)})
    return out

  # ---- measuring ----
  def _generate(self, variables, images, history: bool) -> list[str]:
    """Greedy answers to every turn, dialogue-major (index i * K + t)."""
    k = self.num_turns
    x = self.model.inputs(variables, {"image": images}, self.batch_size)
    memory, mask = in_chunks(lambda c: self.memory(variables, c), x, self.batch_size)
    state = {"memory": np.repeat(memory, k, 0), "mask": np.repeat(mask, k, 0),
             **self.prompts}
    tokens = in_chunks(lambda c: self.decode(variables, c, history), state,
                       self.batch_size)
    answers = []
    for row, s in zip(tokens, self.prompts["prompt_len"]):
      answers.append(dialogue_data.decode(row[s:]))   # up to its EOS
    return answers

  def _rank(self, variables, history: bool) -> dict[str, float]:
    x = self.model.inputs(variables, {"image": self.images}, self.batch_size)
    memory, mask = in_chunks(lambda c: self.memory(variables, c), x, self.batch_size)
    scores, true, relevance = [], [], []
    for group in self.candidates:
      rows = {"memory": memory[group["index"]], "mask": mask[group["index"]],
              "tokens": group["tokens"], "turn": group["turn"],
              "answer_mask": group["mask"]}
      s = in_chunks(lambda c: self.score(variables, c, history), rows, self.batch_size)
      scores.append(s.reshape(len(group["true"]), -1))
      true.append(group["true"])
      relevance.append(group["relevance"])
    return dm.ranking_metrics(np.concatenate(scores), np.concatenate(true),
                              np.concatenate(relevance))

  def _generation_metrics(self, answers: list[str]) -> dict[str, float]:
    em = dm.exact_match(answers, self.truths)
    out = {"exact_match": float(em.mean()),
           "token_f1": float(dm.token_f1(answers, self.truths).mean()),
           "exact_match/needs_history": float(em[self.needs_history].mean()),
           "exact_match/no_history_needed": float(em[~self.needs_history].mean())}
    types = np.array(self.types)
    for kind in sorted(set(self.types)):
      out[f"exact_match/{kind}"] = float(em[types == kind].mean())
    return out

  def _attacked_images(self, variables) -> np.ndarray:
    x = self.model.inputs(variables, {"image": self.images}, self.batch_size)
    data = {"x": x, "tokens": self.tokens, "turn": self.turn, "target": self.target}
    return in_chunks(lambda c: self.attack(variables, c), data, self.batch_size)

  def __call__(self, params, model_state, step: int) -> dict[str, float]:
    cfg = self.cfg
    variables = model_variables(params, model_state)
    answers = self._generate(variables, self.images, True)
    metrics = self._generation_metrics(answers)
    if self.candidates and cfg.rank_dialogues:
      metrics.update(self._rank(variables, True))
      metrics.update({f"chance/{k}": v for k, v in dm.chance_levels(cfg.candidates).items()})
    samples = {"answer": answers}
    if cfg.ablate_history:
      ablated = self._generate(variables, self.images, False)
      samples["answer_without_history"] = ablated
      ablated_metrics = self._generation_metrics(ablated)
      if cfg.rank_dialogues:
        ablated_metrics.update(self._rank(variables, False))
      metrics.update({f"ablated/{k}": v for k, v in ablated_metrics.items()})
    if cfg.attack_eps > 0:
      attacked = self._generate(variables, self._attacked_images(variables), True)
      samples["answer_under_attack"] = attacked
      em = dm.exact_match(attacked, self.truths)
      metrics.update({
          "attack/exact_match": float(em.mean()),
          "attack/exact_match/needs_history": float(em[self.needs_history].mean()),
          "attack/flipped": float(1.0 - dm.exact_match(attacked, answers).mean())})
    if jax.process_index() == 0:
      self._write(step, metrics, samples)
    logging.info("dialogue at step %d: exact match %.3f (history turns %.3f, ablated "
                 "%.3f), MRR %.3f", step, metrics["exact_match"],
                 metrics["exact_match/needs_history"],
                 metrics.get("ablated/exact_match/needs_history", float("nan")),
                 metrics.get("mrr", float("nan")))
    return metrics

  def _write(self, step, metrics, samples) -> None:
    out_dir = self.output_dir("dialogue")
    os.makedirs(out_dir, exist_ok=True)
    k, dialogues = self.num_turns, []
    for i in range(min(self.cfg.samples, len(self.tokens))):
      turns = []
      for t in range(k):
        r = i * k + t
        turns.append({"type": self.types[r], "needs_history": bool(self.needs_history[r]),
                      "question": self.questions[r], "truth": self.truths[r],
                      **{name: a[r] for name, a in samples.items()}})
      dialogues.append(turns)
    with open(os.path.join(out_dir, f"step_{step}.json"), "w") as f:
      json.dump({"step": step, "metrics": metrics, "dialogues": dialogues}, f, indent=2)


def _logits(model, variables, memory, mask, tokens, turn, history):
  """Decoder logits [N,T,V] of dialogue rows tokens [N,T] (turn ids [N,T])."""
  return model.apply(variables, memory, mask, tokens, method="caption_logits",
                     train=False,
                     self_mask=dialogue_obj.turn_attention_mask(turn, history))


def _decode(model, variables, c, history):
  """Greedy answers after each row's prompt -> tokens [N,T] (prompt, answer, EOS, PAD)."""
  logits_fn = lambda state, tokens: _logits(model, variables, state["memory"],
                                            state["mask"], tokens, state["turn"], history)
  state = {k: c[k] for k in ("memory", "mask", "turn")}
  n, length = c["prompt"].shape
  return decoding.greedy_decode(logits_fn, state, batch_size=n, max_len=length,
                                prompt=c["prompt"], prompt_len=c["prompt_len"],
                                max_new_tokens=MAX_ANSWER_TOKENS)


def _score(model, variables, c, history):
  """Log-likelihood [N] of each candidate row's answer (its words and EOS)."""
  logits = _logits(model, variables, c["memory"], c["mask"], c["tokens"], c["turn"],
                   history)
  return -dialogue_obj.answer_nll(logits, c["tokens"], c["answer_mask"])


def _attack(model, variables, d, eps, steps, seed):
  """Images [N,H,W,C] after PGD (L-inf eps, `steps`) maximising each dialogue's summed
  answer NLL (teacher-forced, history on)."""
  def loss_fn(inputs):
    apply = lambda *a, **k: model.apply(variables, *a, **k)
    logits = dialogue_obj.dialogue_logits(apply, inputs, d["tokens"], d["turn"],
                                          history=True, train=False)
    return dialogue_obj.answer_nll(logits, d["tokens"], d["target"])
  adv = attacks.perturb(loss_fn, d["x"], jax.random.PRNGKey(seed), attack="pgd",
                        eps=eps, steps=steps, bounds=(0.0, 1.0), best_iterate=True)
  return adv["image"]
