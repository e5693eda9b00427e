"""The registry of host preprocessing ops, apart from the ops themselves.

The op modules (ops.py and ops_{audio,image,ner,text,vqa}.py) register into `OPS` here;
`mmjax.data.ops` imports them all, so importing it gives the full registry. Keeping the
table in its own module lets the op modules import it without importing `ops`, which
imports them: no import circle.
"""
from mmjax.registry import Registry

OPS = Registry("preprocessing op")

__all__ = ["OPS"]
