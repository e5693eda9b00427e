"""`dialogue`: generative visual dialogue, every turn teacher-forced in one pass.

The image is encoded by the model's encoder (`caption_memory`); the dialogue row
(`mmjax/data/dialogue.py`: q1 BOS a1 EOS q2 BOS a2 EOS ...) goes through the caption
decoder, which cross-attends to the image and self-attends under `turn_attention_mask`:
an answer token reads its own question, the earlier turns (their questions and answers,
the history) and the earlier tokens of its own answer, never a later turn. The loss is
the next-token NLL of the answer tokens (and the EOS that ends each answer) only.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.objectives import losses
from mmjax.objectives.base import (ENCODE, OBJECTIVES, Objective, example_weights,
                                   stage_rngs)


def turn_attention_mask(turn: jax.Array, history=True) -> jax.Array:
  """turn [B,T] int (turn index per token, -1 = padding) -> [B,T,T] bool, True where
  query t may read key s: s <= t, s real, and (history) any earlier turn or (not
  history) only t's own turn. `history`: a bool, traced or not (one compile for both),
  or one per dialogue [B]."""
  turn = jnp.asarray(turn)
  t = turn.shape[-1]
  causal = jnp.tril(jnp.ones((t, t), bool))[None]
  same_turn = turn[:, :, None] == turn[:, None, :]
  history = jnp.asarray(history, bool)
  history = history.reshape(-1, 1, 1) if history.ndim else history
  return causal & (turn >= 0)[:, None, :] & (same_turn | history)


def dialogue_logits(model_apply, inputs: dict, tokens: jax.Array, turn: jax.Array, *,
                    history: bool, train: bool, **kwargs):
  """model_apply(*args, method=..., train=..., **kwargs) -> next-token logits [B,T,V]
  of the dialogue `tokens` [B,T] about the embedded image `inputs`."""
  memory, memory_mask = model_apply(inputs, method="caption_memory", train=train, **kwargs)
  return model_apply(memory, memory_mask, tokens, method="caption_logits", train=train,
                     self_mask=turn_attention_mask(turn, history), **kwargs)


def answer_nll(logits: jax.Array, tokens: jax.Array, target: jax.Array) -> jax.Array:
  """Per-row summed NLL [B] of the tokens where target [B,T] is 1, from logits [B,T,V]
  (position t - 1 predicts token t)."""
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
  picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  return -(picked * target[:, 1:].astype(jnp.float32)).sum(-1)


def check_decoder(model, who: str) -> None:
  """ConfigError unless `model` has a caption decoder reading images."""
  if getattr(model, "caption_depth", 0) <= 0:
    raise ConfigError(f"{who} generates answers with the caption decoder, but the model "
                      "has none: use model.name='multimodal' with model.caption_depth > 0 "
                      "(configs/visdial_digits.py has 2).")
  if model.caption_source != "image":
    raise ConfigError(f"{who} answers about images: set config.model.caption_source="
                      f"'image' (it is {model.caption_source!r}).")


def check_length(model, length: int, who: str) -> None:
  """ConfigError if dialogue rows of `length` tokens exceed the decoder's positions."""
  if length > model.max_len:
    over = length - model.max_len
    raise ConfigError(f"{who}: the dialogues are {length} tokens long, {over} more than "
                      f"config.model.max_len={model.max_len} "
                      "(the decoder's positions). Raise model.max_len to >= "
                      f"{length} or ask fewer turns (dialogue_tokens(turns=...)).")


@OBJECTIVES.register("dialogue")
@dataclasses.dataclass(frozen=True, eq=False)
class Dialogue(Objective):
  """Answer NLL of every turn of a dialogue (see the module docstring).

  Options: `key` the dialogue row's batch key (with `_turn`, `_target` beside it, as
  the `dialogue_tokens` op writes them); `history` False hides the earlier turns (the
  history-ablated model); `history_dropout` p hides them from a random share p of the
  training dialogues (never at eval), so that answers which need only the image and
  the question are learned from those, not from what the history happens to say
  (docs/multimodal.md). Metrics: `loss` (NLL per answer token), `perplexity`,
  `token_accuracy`.
  """
  key: str = "dialogue"
  history: bool = True
  history_dropout: float = 0.0

  def __post_init__(self):
    check_decoder(self.model, "Objective 'dialogue'")
    if not isinstance(self.history, bool):
      raise ConfigError(f"objective.history={self.history!r} must be True or False.")
    if not 0.0 <= self.history_dropout < 1.0:
      raise ConfigError(f"objective.history_dropout={self.history_dropout!r} must be in "
                        "[0, 1): the share of training dialogues whose earlier turns are "
                        "hidden (1 would be objective.history=False).")
    if self.history_dropout and not self.history:
      raise ConfigError("objective.history_dropout hides the history of some dialogues, "
                        "but objective.history=False hides it from all: set one of them.")

  def prepare(self, batch, rng):
    del rng
    names = (self.key, f"{self.key}_turn", f"{self.key}_target")
    missing = [n for n in names if n not in batch]
    if missing:
      raise ConfigError(f"Objective 'dialogue' reads {list(names)} from the batch, which "
                        f"lacks {missing} (it has {sorted(batch)}); add "
                        "dialogue_tokens(...) to config.data.preprocess_*.")
    check_length(self.model, batch[self.key].shape[1], "Objective 'dialogue'")
    prepared = {k: v for k, v in batch.items()
                if not k.startswith(self.key) and k not in ("text", "text_mask")}
    prepared["_dialogue"] = jnp.asarray(batch[self.key], jnp.int32)
    prepared["_dialogue_turn"] = jnp.asarray(batch[f"{self.key}_turn"], jnp.int32)
    prepared["_dialogue_target"] = jnp.asarray(batch[f"{self.key}_target"], jnp.int32)
    return prepared

  def loss_from_inputs(self, params, inputs, batch, rng, *, model_state, train):
    tokens = batch["_dialogue"]
    variables = {"params": params, **model_state}
    apply = lambda *a, **k: self.model.apply(variables, *a, **k)
    history = self.history
    if train and self.history_dropout:   # one draw per dialogue: True keeps its history
      history = jax.random.bernoulli(jax.random.fold_in(rng, 0x68697374),   # "hist"
                                     1.0 - self.history_dropout, (tokens.shape[0],))
    logits = dialogue_logits(apply, inputs, tokens, batch["_dialogue_turn"],
                             history=history, train=train,
                             rngs=stage_rngs(rng, ENCODE))
    weights = (example_weights(batch, tokens.shape[0]) *
               inputs["image_present"].astype(jnp.float32))
    loss, metrics = losses.next_token_loss(logits, tokens, batch["_dialogue_target"],
                                           weights)
    return loss, (metrics, dict(model_state))
