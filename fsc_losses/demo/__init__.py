"""FSC-CLIP in miniature: ``python -m fsc_losses.demo``.

A tiny open_clip ViT CLIP, randomly initialised, is pre-trained with the CLIP loss on a synthetic
world of coloured shapes (``world``), then copies of it are fine-tuned with the CLIP loss, with a
global hard-negative loss, and with FSC-CLIP (global and local hard-negative losses under
Selective Calibrated Regularization), all on the same batches. Every model is scored on held-out
scenes for compositionality (true caption against its hard negatives), zero-shot classification
and retrieval (``experiment``); the numbers go to a table, ``results.json`` and a bar chart
(``report``). See ``docs/demo.md``.

The demo sits at the edge of the package: it uses ``fsc_losses``, ``fsc_losses.negatives`` and
``fsc_losses.integrations.open_clip`` and nothing imports it. It needs open_clip.
"""
