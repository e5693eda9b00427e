"""Refusals before compute: a matmul weight outside a Dense/Conv layer (a tied
embedding) is named, with the fix; and bad quantization settings (QAT, QLoRA)."""
import jax.numpy as jnp
import pytest

from mmjax import config as config_lib, models
from mmjax.errors import ConfigError
from mmjax.quant import layers as quant_layers, qat

TIED = dict(name="text_transformer", vocab_size=50, max_len=8, width=16, depth=1,
            num_heads=2, mlp_dim=32, num_classes=0, lm_head=True, tie_embeddings=True)
BATCH = {"text": jnp.zeros((1, 8), jnp.int32), "text_mask": jnp.ones((1, 8), jnp.int32)}


def test_a_tied_embedding_is_named_and_keep_float_lets_it_pass():
  model = models.build_model(TIED)
  with pytest.raises(ConfigError, match=r"token_embed \(TokenEmbed: embedding\).*"
                                        r"quantization.keep_float"):
    quant_layers.plan_layers(model, quant_layers.example_batch(BATCH))
  plan = quant_layers.plan_layers(model, quant_layers.example_batch(BATCH),
                                  keep_float=("token_embed",))
  assert "token_embed" in plan.kept_float and "encoder/block_0/mlp/fc1" in plan.quantized


@pytest.mark.parametrize("overrides, message", [
    (dict(method="int4"), "Unknown quantization.method='int4'"),
    (dict(qat=True, method="int8_static"), "int8_static's fixed activation scales"),
    (dict(qat=True, calibration_batches=0), "calibration_batches=0 must be"),
    (dict(calibration_statistic="p0"), "calibration_statistic='p0'"),
    (dict(qat=False, qlora=True), "qlora trains LoRA adapters.*finetune.mode='full'"),
    (dict(qat=True, qlora=True, mode="lora"), "qlora and quantization.qat together"),
])
def test_bad_quantization_settings_are_refused(overrides, message):
  c = config_lib.default_config()
  overrides = dict(overrides)
  c.finetune.mode = overrides.pop("mode", "full")
  c.quantization.update({"qat": True, **overrides})
  with pytest.raises(ConfigError, match=message):
    qat.check_config(c)
