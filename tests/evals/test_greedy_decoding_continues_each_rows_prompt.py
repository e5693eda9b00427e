"""`greedy_decode(prompt=, prompt_len=)` continues each row after its own prompt (the
dialogue evaluator's history + question), keeps the prompt, stops a row at EOS or after
max_new_tokens, and refuses a prompt of the wrong shape."""
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.errors import ConfigError
from mmjax.evals import decoding

V, EOS, PAD = 12, 2, 0


def next_is_previous_plus_one(state, tokens):
  """Logits [N,T,V] whose argmax at t is tokens[:, t] + 1 (EOS after 9 -> 10)."""
  del state
  nxt = jnp.where(tokens + 1 >= 10, EOS, tokens + 1)
  return jnp.eye(V)[nxt] * 5.0


def test_each_row_continues_after_its_own_prompt():
  prompt = np.array([[5, 6, 9, 9, 0, 0, 0, 0],
                     [4, 0, 0, 0, 0, 0, 0, 0],
                     [7, 3, 3, 3, 3, 3, 0, 0]], np.int32)
  lengths = np.array([2, 1, 6], np.int32)
  state = {"x": np.zeros((3, 1), np.float32)}
  out = np.asarray(decoding.greedy_decode(next_is_previous_plus_one, state, batch_size=3,
                                          max_len=8, prompt=prompt, prompt_len=lengths))
  # Tokens after the prompt are dropped (the 9s of row 0), then 6 -> 7, 8, 9, EOS.
  assert out.tolist() == [[5, 6, 7, 8, 9, EOS, PAD, PAD],
                          [4, 5, 6, 7, 8, 9, EOS, PAD],
                          [7, 3, 3, 3, 3, 3, 4, 5]]      # runs to max_len, no EOS
  short = np.asarray(decoding.greedy_decode(
      next_is_previous_plus_one, state, batch_size=3, max_len=8, prompt=prompt,
      prompt_len=lengths, max_new_tokens=2))
  assert short.tolist() == [[5, 6, 7, 8, PAD, PAD, PAD, PAD],
                            [4, 5, 6, PAD, PAD, PAD, PAD, PAD],
                            [7, 3, 3, 3, 3, 3, 4, 5]]
  with pytest.raises(ConfigError, match="prompt must be"):
    decoding.greedy_decode(next_is_previous_plus_one, state, batch_size=3, max_len=8,
                           prompt=prompt[:, :4], prompt_len=lengths)
