"""The registry of host preprocessing ops, apart from the ops themselves.

The op modules (ops.py and ops_{audio,image,ner,text,vqa}.py) register into `OPS` here;
`mmjax.data.ops` imports them all, so importing it gives the full registry. Keeping the
table in its own module lets the op modules import it without importing `ops`, which
imports them: no import circle.
"""
from mmjax.registry import Registry

# random=True: the op draws from its seed. Eval specs and data.in_memory's cached
# training examples must not use such ops (a draw made once would never change).
OPS = Registry("preprocessing op", attributes={"random": False})

__all__ = ["OPS"]
