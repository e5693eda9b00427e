"""Each PTQ method keeps a small CNN's predictions (>= 95% the same class) at about a
quarter of the parameter bytes, through the model's `__call__` and `encode` alike."""
import jax
import numpy as np
import pytest

from mmjax.quant import layers as quant_layers, ptq
from tests.conftest import tiny_cnn


@pytest.fixture(scope="module")
def cnn():
  model, batch, variables = tiny_cnn(64)
  inputs = {"image": batch["image"]}
  plan = quant_layers.plan_layers(model, quant_layers.example_batch(inputs))
  return model, inputs, variables, plan


@pytest.mark.parametrize("method", ptq.METHODS)
def test_predictions_mostly_equal_and_bytes_four_times_smaller(cnn, method):
  model, inputs, variables, plan = cnn
  assert plan.quantized == ("conv1", "conv2", "fc1", "fc2")
  qmodel, qvariables = ptq.quantize(model, variables, method, plan,
                                    quant_layers.example_batch(inputs),
                                    [jax.tree.map(lambda x: x[:32], inputs)])
  logits = np.asarray(model.apply(variables, inputs)["logits"])
  qlogits = np.asarray(jax.jit(qmodel.apply)(qvariables, inputs)["logits"])
  assert (logits.argmax(-1) == qlogits.argmax(-1)).mean() >= 0.95
  encoded = qmodel.apply(qvariables, inputs, method="encode")["logits"]
  np.testing.assert_allclose(np.asarray(encoded), qlogits, rtol=1e-5, atol=1e-6)
  ratio = (ptq.parameter_bytes(variables["params"])["total"] /
           ptq.parameter_bytes(qvariables["params"])["total"])
  assert 3.9 < ratio < 4.0   # int8 kernels, float32 biases and scales
