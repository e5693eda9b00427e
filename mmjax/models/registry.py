"""The model registry, kept apart from `mmjax.models.__init__` to avoid import cycles."""
from mmjax.registry import Registry

MODELS = Registry("model")
