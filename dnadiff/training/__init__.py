"""Lightning modules, checkpoints and configs for pretraining (all modalities)."""
