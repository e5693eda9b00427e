"""mmjax: multimodal models trained with L_ssl + lambda * L_adv, in JAX/Flax.

Importing mmjax never imports TensorFlow; only `mmjax.data` does.
"""
from mmjax.errors import MmjaxError, ConfigError

__version__ = "0.1.0"
__all__ = ["MmjaxError", "ConfigError", "__version__"]
