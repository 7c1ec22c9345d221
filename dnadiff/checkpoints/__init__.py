"""The one checkpoint package: every file format dnadiff reads or writes, and every source it loads from.

- :mod:`.format`: the versioned ``dnadiff-model/1`` file (``model.pt``), safe loads (``weights_only=True``),
  the diffusion process a file describes (``build_process``), migrations of older payloads.
- :mod:`.sources`: one reader for every source (a ``model.pt``, a pretraining Lightning ``.ckpt``, a run
  folder, an original Caduceus folder, a Hugging Face hub id) -> ``(denoiser, process, payload)``.
- :mod:`.huggingface`: the original Caduceus (``CaduceusForMaskedLM``) key map and conversion both ways.
- :mod:`.export`: ``dnadiff export``, any source written back in the Hugging Face format.

It stands above ``models/`` and ``diffusion/`` and below ``training/``: training writes checkpoints and reads
``--init`` sources through here; nothing here imports Lightning (its checkpoint IO plugin, which writes through
:func:`dnadiff.atomic.atomic_write`, is in :mod:`dnadiff.training.callbacks`).
"""
