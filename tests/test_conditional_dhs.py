"""Class-conditional pretraining on the real DHS training split, then generation per cell type.

A tiny transformer is pretrained briefly (Lightning ``DiffusionModule`` with classifier-free label
dropout, batches from :class:`DHSDataModule`), exported as ``model.pt``, loaded back through
``dnadiff.generate.load`` and asked for each of the four cell types with guidance. A k-mer classifier
trained on real labelled DHS sequences must assign the samples to the requested cell type more
often than chance (0.25), significantly: the binomial tail probability of that many hits under
p = 0.25 must be below 1e-3.
"""
from __future__ import annotations

import lightning as L
import numpy as np
import pytest
from scipy.stats import binom

DHS_FILE = "K562_hESCT0_HepG2_GM12878_12k_sequences_per_group.txt.gz"
TRAIN_STEPS = 500
PER_CLASS = 60


@pytest.mark.slow
def test_conditional_samples_recognised_as_requested_cell_type(shared_data, tmp_path):
    from dnadiff.data.dhs import DHSDataModule
    from dnadiff.eval.sequence_metrics import KmerClassifier
    from dnadiff.generate import load
    from dnadiff.checkpoints.format import save_checkpoint
    from dnadiff.training.diffusion_module import DiffusionModule

    data = DHSDataModule(shared_data / "dna_diffusion" / DHS_FILE, batch_size=64, seed=0)
    spec = {"name": "transformer", "vocab_size": 7, "num_outputs": 4, "d_model": 32, "n_layer": 1, "n_head": 2,
            "max_len": 200, "num_classes": 4}
    module = DiffusionModule(spec, {"vocab_size": 4, "schedule": "linear"}, ema_decay=0.0, label_dropout=0.15,
                             optim={"lr": 5e-3, "warmup_steps": 20, "max_steps": TRAIN_STEPS, "min_lr_ratio": 0.2},
                             data_info={"modality": "dna", "window": 200, "class_names": data.class_names})
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=TRAIN_STEPS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=data.train_dataloader())
    generator = load(save_checkpoint(tmp_path / "model.pt", module.export_payload()))
    assert generator.class_names == ["GM12878", "hESCT0", "K562", "HepG2"]

    train = data.data.subset("training")
    keep = np.random.default_rng(0).choice(len(train.labels), 8000, replace=False)
    classifier = KmerClassifier(ks=(1, 2, 3)).fit([train.sequences[i] for i in keep], train.labels[keep])

    samples, requested = [], []
    for class_id, name in enumerate(generator.class_names):
        samples += generator.generate(PER_CLASS, length=200, steps=50, class_name=name, guidance=5.0, seed=class_id)
        requested += [class_id] * PER_CLASS
    assert set("".join(samples)) <= set("ACGT")
    hits = int((classifier.predict(samples) == np.asarray(requested)).sum())
    accuracy = hits / len(samples)
    print(f"conditional class accuracy {accuracy:.3f} vs chance 0.25 ({hits}/{len(samples)})")
    assert accuracy > 0.25
    assert binom.sf(hits - 1, len(samples), 0.25) < 1e-3
