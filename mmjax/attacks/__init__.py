"""Adversarial attacks as pure, jit-able functions over a pytree of continuous inputs.

    adv = perturb(loss_fn, inputs, key, attack='apgd', eps=8/255, bounds=(0., 1.))

`inputs` is the model's embed/encode seam (docs/interfaces.md); `loss_fn(adv) -> [B]` is
maximised. Modules: `dispatch` (perturb), `core` (pytree plumbing), `norms` (projections,
steps, random starts), `pgd` (FGSM, Fast-AT, PGD), `apgd` (Auto-PGD), `square` (Square),
`fab` (FAB), `losses` (CE, margin, DLR).
"""
from mmjax.attacks.dispatch import ATTACKS, perturb
from mmjax.attacks.losses import (cross_entropy, dlr_loss, margin, targeted_dlr_loss,
                                  top_other_classes)
from mmjax.attacks.norms import NORMS

__all__ = ["ATTACKS", "NORMS", "perturb", "cross_entropy", "dlr_loss", "margin",
           "targeted_dlr_loss", "top_other_classes"]
