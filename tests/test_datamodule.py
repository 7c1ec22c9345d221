"""GenomeDataModule: batches, deterministic held-out tiles, DDP shards, exact resume through Lightning."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from dnadiff.data.fasta import decompress_to_cache
from dnadiff.data.genome_datamodule import GenomeDataModule
from dnadiff.errors import UserError

HG38 = "hg38/hg38_chr2_1-2333275.fa.gz"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def yeast_plain(shared_data, tmp_path_factory):
    return decompress_to_cache(shared_data / "yeast/S288C_sacCer_16chr.fa.gz", tmp_path_factory.mktemp("yeast"))


def test_batches_and_splits_on_hg38(shared_data):
    dm = GenomeDataModule(shared_data / HG38, window=256, batch_size=8, rc_aug=True, max_eval_windows=20)
    train = next(iter(dm.train_dataloader()))
    assert train["tokens"].shape == (8, 256) and train["tokens"].dtype == torch.long
    assert train["loss_mask"].dtype == torch.bool and torch.equal(train["loss_mask"], train["tokens"] < 4)
    assert train["index"].tolist() == list(range(8))
    assert set(train["strand"].tolist()) <= {-1, 1}
    train_end = int(dm.splits["train"].end[0])
    assert (train["start"] + 256 <= train_end).all()
    val = [b for b in dm.val_dataloader()]
    again = [b for b in dm.val_dataloader()]
    assert sum(len(b["index"]) for b in val) == 20  # the val range holds no N
    assert all(torch.equal(a["tokens"], b["tokens"]) for a, b in zip(val, again))
    starts = torch.cat([b["start"] for b in val])
    assert (starts >= int(dm.splits["val"].start[0])).all() and (torch.cat([b["strand"] for b in val]) == 1).all()
    test_starts = torch.cat([b["start"] for b in dm.test_dataloader()])
    assert (test_starts + 256 <= int(dm.splits["val"].start[0])).all() and (test_starts >= train_end).all()


def test_region_loader(shared_data):
    dm = GenomeDataModule(shared_data / HG38, window=100, batch_size=4)
    batches = list(dm.eval_dataloader(dm.region("chr2:50,001-51,000")))
    assert torch.cat([b["start"] for b in batches]).tolist() == list(range(50_000, 51_000, 100))


def test_empty_held_out_split_is_user_error(yeast_plain):
    dm = GenomeDataModule(yeast_plain, window=512, val_contigs=["chr01"])
    with pytest.raises(UserError, match="the test split is empty"):
        dm.test_dataloader()


def test_yeast_with_held_out_contigs(yeast_plain):
    dm = GenomeDataModule(yeast_plain, window=512, batch_size=16, val_contigs=["chr01"], test_contigs=["chr06"],
                          max_eval_windows=None)
    names = dm.genome.names
    train = next(iter(dm.train_dataloader()))
    assert not set(train["contig"].tolist()) & {names.index("chr01"), names.index("chr06")}
    val = list(dm.val_dataloader())
    assert {c for b in val for c in b["contig"].tolist()} == {names.index("chr01")}
    assert sum(len(b["index"]) for b in val) == dm.genome.lengths[names.index("chr01")] // 512


def test_ddp_ranks_see_disjoint_windows(shared_data):
    loaders = []
    for rank in range(2):
        dm = GenomeDataModule(shared_data / HG38, window=128, batch_size=4, max_eval_windows=16)
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, training=True)
        loaders.append(dm)
    train = [[b["index"].tolist() for b in itertools.islice(dm.train_dataloader(), 3)] for dm in loaders]
    assert train[0] == [[0, 1, 2, 3], [8, 9, 10, 11], [16, 17, 18, 19]]
    assert train[1] == [[4, 5, 6, 7], [12, 13, 14, 15], [20, 21, 22, 23]]
    val = [sorted(i for b in dm.val_dataloader() for i in b["index"].tolist()) for dm in loaders]
    assert not set(val[0]) & set(val[1]) and sorted(val[0] + val[1]) == list(range(16))


class _RecordingModule(L.LightningModule):
    """A one-parameter model that records the window indices of every training batch."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["index"].tolist())
        return ((self.weight - batch["loss_mask"].float().mean()) ** 2).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val_mean", batch["tokens"].float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(genome, root, max_steps, ckpt_path=None, callbacks=()):
    model = _RecordingModule()
    dm = GenomeDataModule(genome, window=64, batch_size=3, max_eval_windows=6, seed=4)
    trainer = L.Trainer(max_steps=max_steps, default_root_dir=root, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, val_check_interval=2, check_val_every_n_epoch=None,
                        limit_val_batches=1, accelerator="cpu", devices=1, callbacks=list(callbacks),
                        enable_checkpointing=bool(callbacks))
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return model.seen


@pytest.mark.slow
def test_resume_continues_the_exact_data_stream(shared_data, tmp_path):
    genome = shared_data / HG38
    full = _fit(genome, tmp_path / "full", 7)
    assert full == [[3 * s, 3 * s + 1, 3 * s + 2] for s in range(7)]
    every3 = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    first = _fit(genome, tmp_path / "first", 4, callbacks=[every3])
    state = torch.load(tmp_path / "ckpt" / "epoch=0-step=3.ckpt", weights_only=False)["GenomeDataModule"]
    assert state == {"train_start_index": 9, "seed": 4, "window": 64}
    rest = _fit(genome, tmp_path / "rest", 7, ckpt_path=tmp_path / "ckpt" / "epoch=0-step=3.ckpt")
    assert first[:3] + rest == full


def test_bad_input(shared_data, tmp_path):
    with pytest.raises(UserError, match="longer than every contig"):
        GenomeDataModule(shared_data / "hg38/hg38_chrM.fa", window=20_000)
    bed = tmp_path / "other.bed"
    bed.write_text("chr1\t0\t1000\ttrain\n")
    with pytest.raises(UserError, match="names contig 'chr1', which is not in"):
        GenomeDataModule(shared_data / HG38, bed=bed, window=128)
    with pytest.raises(UserError, match="plain gzip.*bgzip"):
        GenomeDataModule(shared_data / "yeast/S288C_sacCer_16chr.fa.gz", window=128)
    with pytest.raises(UserError, match="training split is empty"):
        GenomeDataModule(shared_data / HG38, window=128, val_contigs=["chr2"])
    with pytest.raises(UserError, match="trained on 64 bp windows"):
        GenomeDataModule(shared_data / HG38, window=128).load_state_dict(
            {"train_start_index": 9, "seed": 0, "window": 64})


def test_held_out_piece_shorter_than_the_window_names_the_split_and_the_fix(shared_data):
    # the 2.3 Mb hg38 piece is one contig: 5% held out for val is 116,664 bp, under a 131,072-bp window
    dm = GenomeDataModule(shared_data / HG38, window=131_072, batch_size=1)
    with pytest.raises(UserError, match=r"the val split's longest piece has 116,664 bp, shorter than the "
                                        r"131,072-bp window: .*data.holdout_frac \(now 0.05"):
        dm.windows("val")
    roomy = GenomeDataModule(shared_data / HG38, window=131_072, batch_size=1, holdout_frac=0.06)
    assert roomy.windows("val").total >= 1 and roomy.windows("test").total >= 1
