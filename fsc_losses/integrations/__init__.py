"""Adapters that turn third-party CLIP models into the inputs ``fsc_losses`` expects.

Each adapter lives in its own submodule and imports its library only when that submodule is
imported, so ``import fsc_losses`` works without any of them installed:

* ``fsc_losses.integrations.open_clip`` -- ``encode_dense`` for open_clip ViT models.
* ``fsc_losses.integrations.transformers`` -- ``encode_dense`` for transformers ``CLIPModel`` and
  ``SiglipModel``.
* ``fsc_losses.integrations.lvlm`` -- soft prompts, the learned temperature and hidden states of
  transformers LVLMs.
* ``fsc_losses.integrations.hf_trainer`` -- collators and ``Trainer`` subclasses for both losses
  on transformers' ``Trainer``.
"""
