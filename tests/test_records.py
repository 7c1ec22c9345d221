"""The typed records of what a checkpoint stores: DataInfo (its ``data``), ModelFile (a model.pt) and
ClassifierInfo (a classifier file's origin): exact round trips through ``torch.save`` / ``weights_only`` loading,
older files read with the same values, and a damaged entry refused in one line naming the key."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from dnadiff.checkpoints.format import MODEL_FORMAT, ModelFile, load_checkpoint, save_checkpoint
from dnadiff.checkpoints.sources import load_payload
from dnadiff.data.info import DataInfo
from dnadiff.errors import UserError
from dnadiff.finetuning.classifier import ClassifierInfo

DATA = Path(__file__).parent / "data"


def _through_torch(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("info", [
    DataInfo(window=1024, genome="/g/hg38.fa", val_contigs=("chr8",), test_contigs=("chr9", "chr10"), batch_size=8,
             rc_aug=True, holdout_frac=0.01, max_n_frac=0.1),
    DataInfo(modality="dna", dhs="/d/dhs.tsv", window=200, class_names=("GM12878", "K562")),
    DataInfo(modality="text", window=256, vocab_size=27, embed_size=28, unit="bpc", uniform_bits=4.754887502163468,
             text="/t/text8", text_level="char", val_fraction=0.05, test_fraction=0.05, num_tokens={"train": 90}),
    DataInfo(modality="pixels", window=3072, vocab_size=256, embed_size=257, unit="bpd", uniform_bits=8.0,
             images="digits", pixel_order="interleaved", shape=(32, 32, 3), class_names=("0", "1")),
])
def test_data_info_round_trips_through_a_weights_only_file(info):
    stored = _through_torch(info.to_dict())
    assert DataInfo.from_dict(stored) == info
    assert all(v is not None for v in stored.values())  # unset fields are left out, not written as None


def test_an_early_data_entry_gets_the_dna_sizes_and_an_unknown_key_is_kept_not_read():
    old = DataInfo.from_dict({"modality": "dna", "window": 12})  # what the first model.pt files hold
    assert (old.vocab_size, old.embed_size, old.unit, old.uniform_bits, old.class_names) == (4, 7, "bits/nt", 2.0, ())
    assert DataInfo.from_dict(None) == DataInfo() and DataInfo().kind.caduceus
    future = DataInfo.from_dict({"window": 64, "tokenizer": "bpe-v2"})
    assert future.extra == {"tokenizer": "bpe-v2"} and future.to_dict()["tokenizer"] == "bpe-v2"


@pytest.mark.parametrize("key, value, words", [("window", "512", "an integer"), ("class_names", "K562", "a list"),
                                               ("rc_aug", 1, "true or false"), ("uniform_bits", "2", "a number"),
                                               ("shape", [32, 32.0], "a list of integers")])
def test_a_damaged_data_entry_is_one_line_naming_the_key(key, value, words):
    with pytest.raises(UserError, match=f"model.pt: data.{key}=.* is not {words}"):
        DataInfo.from_dict({"window": 16, key: value}, "model.pt")


def test_an_unknown_modality_is_refused():
    with pytest.raises(UserError, match="unknown data modality 'audio'"):
        DataInfo.from_dict({"modality": "audio"})


@pytest.mark.parametrize("name", ["old_caduceus_ph.pt", "old_caduceus_ps.pt", "old_transformer_genmd4.pt"])
def test_model_file_reads_older_files_and_writes_them_back_with_the_same_content(name, tmp_path):
    raw = load_checkpoint(DATA / name)
    record = load_payload(DATA / name)
    assert record.data == DataInfo(window=12) and record.extra.keys() == {"reference"}
    again = save_checkpoint(tmp_path / name, record)
    back = load_checkpoint(again)
    assert set(back) == set(raw)
    for key in ("format", "model", "diffusion", "metrics"):
        assert back[key] == raw[key], key
    assert DataInfo.from_dict(back["data"]) == DataInfo.from_dict(raw["data"])  # now with the DNA sizes stated
    for key in ("state_dict", "genmd4"):
        assert back[key].keys() == raw[key].keys() and all(torch.equal(back[key][k], raw[key][k]) for k in raw[key])


def test_model_file_round_trip_and_damaged_files():
    record = ModelFile({"name": "caduceus", "d_model": 8}, {"vocab_size": 4}, {"w": torch.arange(3.0)},
                       DataInfo(window=32, class_names=("a", "b")), {"val/bits_per_nt": 1.9},
                       original={"config": {"d_model": 8}})
    stored = _through_torch(record.to_dict())
    assert stored["format"] == MODEL_FORMAT and stored["data"]["class_names"] == ["a", "b"]
    again = ModelFile.from_dict(stored)
    assert again.data == record.data and again.original == record.original and torch.equal(again.state_dict["w"],
                                                                                           record.state_dict["w"])
    with pytest.raises(UserError, match="x.pt is not a dnadiff model checkpoint"):
        ModelFile.from_dict({**stored, "format": "other/1"}, "x.pt")
    with pytest.raises(UserError, match="x.pt has no state_dict mapping"):
        ModelFile.from_dict({**stored, "state_dict": [1, 2]}, "x.pt")
    with pytest.raises(UserError, match="x.pt: its metrics entry is a str"):
        ModelFile.from_dict({**stored, "metrics": "fine"}, "x.pt")


def test_classifier_info_round_trip_and_types():
    info = ClassifierInfo(task="human_enhancers_cohn", fold=2, description="caduceus-ph", noisy=True)
    assert ClassifierInfo.from_dict(_through_torch(info.to_dict())) == info
    assert "noisy" not in ClassifierInfo(task="t").to_dict()  # a clean classifier's file, as before
    with pytest.raises(UserError, match="clf.pt: fold='2' is not an integer"):
        ClassifierInfo.from_dict({"fold": "2"}, "clf.pt")


def test_the_migrations_rename_exactly_the_old_keys():
    from dnadiff.migrations import MODEL_KEYS, process_state, upgrade_process_keys, upgrade_state_keys

    w = torch.ones(2)
    state = {"model.time_embed.mlp.0.weight": w, "model.time_embed.2.bias": w, "model.blocks.0.mlp.0.weight": w}
    assert set(upgrade_state_keys(state, "model.")) == {"model.time_embed.0.weight", "model.time_embed.2.bias",
                                                        "model.blocks.0.mlp.0.weight"}
    lightning = {"genmd4.raw_w": w, "model.x": w}
    assert set(upgrade_process_keys(dict(lightning))) == {"diffusion.raw_w", "model.x"}
    assert process_state(lightning) == {"raw_w": w} == process_state({"diffusion.raw_w": w, "model.x": w})
    assert process_state({"model.x": w}) == {}
    from dnadiff.models import build_model

    old = {"name": "transformer", "vocab_size": 7, "num_outputs": 4, "d_model": 8, "n_layer": 1, "n_head": 2}
    assert build_model(old).config.embed_size == 7 and MODEL_KEYS["vocab_size"] == "embed_size"
