"""One loader for every source: original Caduceus folders (safetensors or .bin), hub ids resolved offline
through a cache laid out as huggingface_hub lays it out, dnadiff model.pt; one-line errors; no Lightning."""
from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dnadiff.data.tokenizer import CADUCEUS_IDS, EMBED_SIZE
from dnadiff.errors import UserError
from dnadiff.checkpoints.sources import load_model, load_payload, read_original, resolve
from dnadiff.checkpoints.format import save_checkpoint
from hf_cache import add_repo, original_files, reference

REPO = Path(__file__).resolve().parents[1]
#: original id -> dnadiff id for the fixture inputs (A/C/G/T/N)
TO_OURS = {CADUCEUS_IDS[k]: k for k in range(EMBED_SIZE)}


def ours(input_ids: torch.Tensor) -> torch.Tensor:
    return input_ids.clone().apply_(lambda i: TO_OURS[i])


def check_denoiser_matches_reference(model, expected):
    """The converted denoiser's logits on A/C/G/T are the original MLM's columns A/C/G/T (fixture outputs)."""
    with torch.no_grad():
        got = model(ours(expected["input_ids"]), torch.zeros(3))
    want = expected["logits"][..., [CADUCEUS_IDS[k] for k in range(4)]]
    assert got.shape == want.shape == (3, 64, 4)
    assert (got - want).abs().max() < 1e-4


@pytest.mark.parametrize("variant", ["ph", "ps"])
@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_hub_id_folder_and_model_pt_load_the_same_reference_model(shared_fixtures, tmp_path, variant, weights):
    config, state, expected = reference(shared_fixtures, variant)
    files = original_files(config, state, weights, tmp_path)
    cache = tmp_path / "hub"
    repo_id = f"kuleshov-group/caduceus-{variant}_test"
    snapshot = add_repo(cache, repo_id, files)
    assert resolve(repo_id, cache_dir=cache) == snapshot
    assert (snapshot / "config.json").is_symlink()
    model, process, payload = load_model(repo_id, cache_dir=cache)
    check_denoiser_matches_reference(model, expected)
    assert process.vocab_size == 4 and payload.model["variant"] == variant
    assert payload.original["config"] == config and payload.original["embedding"].shape == (16, 32)
    # the snapshot folder itself, and the converted payload written as model.pt, give the same model
    folder_model, _, _ = load_model(snapshot)
    save_checkpoint(tmp_path / "model.pt", payload)
    pt_model, _, _ = load_model(tmp_path / "model.pt")
    ids = ours(expected["input_ids"])
    with torch.no_grad():
        ref = model(ids, torch.zeros(3))
        assert torch.equal(folder_model(ids, torch.zeros(3)), ref)
        assert torch.equal(pt_model(ids, torch.zeros(3)), ref)


def test_safetensors_preferred_and_read_without_pickle(shared_fixtures, tmp_path, monkeypatch):
    config, state, expected = reference(shared_fixtures, "ph")
    folder = tmp_path / "both"
    folder.mkdir()
    for name, data in {**original_files(config, state, "safetensors", tmp_path),
                       "pytorch_model.bin": b"not a pickle at all"}.items():
        (folder / name).write_bytes(data)

    def no_torch_load(*args, **kwargs):
        raise AssertionError("torch.load used for a safetensors checkpoint")

    monkeypatch.setattr(torch, "load", no_torch_load)
    _, got = read_original(folder)
    assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)


def test_revision_and_missing_files_and_bad_configs_are_one_line_errors(shared_fixtures, tmp_path):
    config, state, _ = reference(shared_fixtures, "ph")
    cache = tmp_path / "hub"
    with pytest.raises(UserError, match=r"not in the Hugging Face cache .*hub: add --download"):
        resolve("kuleshov-group/absent", cache_dir=cache)
    with pytest.raises(UserError, match="does not exist"):  # a path-like name is not taken for a hub id
        resolve(tmp_path / "missing" / "model.pt")
    add_repo(cache, "me/no-weights", {"config.json": json.dumps(config).encode()})
    with pytest.raises(UserError, match="model.safetensors or pytorch_model.bin missing"):
        load_payload("me/no-weights", cache_dir=cache)
    add_repo(cache, "me/bad-json", {**original_files(config, state, "safetensors", tmp_path), "config.json": b"{oops"})
    with pytest.raises(UserError, match="not valid JSON"):
        load_payload("me/bad-json", cache_dir=cache)
    add_repo(cache, "me/no-d-model", original_files({k: v for k, v in config.items() if k != "d_model"}, state,
                                                    "safetensors", tmp_path))
    with pytest.raises(UserError, match="lacks valid d_model"):
        load_payload("me/no-d-model", cache_dir=cache)
    add_repo(cache, "me/wrong-size", original_files({**config, "d_model": 48}, state, "safetensors", tmp_path))
    with pytest.raises(UserError, match="does not fit its config"):
        load_payload("me/wrong-size", cache_dir=cache)
    (tmp_path / "trunc").mkdir()
    (tmp_path / "trunc" / "config.json").write_text(json.dumps(config))
    (tmp_path / "trunc" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_payload(tmp_path / "trunc")
    with pytest.raises(UserError, match="does not exist"):
        load_payload(tmp_path / "nothing.pt")
    # a pinned revision resolves to its own snapshot
    old = add_repo(cache, "me/pinned", original_files(config, state, "bin", tmp_path), commit="a" * 40)
    new = add_repo(cache, "me/pinned", {"config.json": b"{}"}, commit="b" * 40)
    assert resolve("me/pinned", cache_dir=cache) == new
    assert resolve(f"me/pinned@{'a' * 40}", cache_dir=cache) == old


def test_finetune_starts_from_an_original_folder_in_training_mode(shared_fixtures, tmp_path):
    from dnadiff.finetuning.trainer import backbone_from_checkpoint

    config, state, expected = reference(shared_fixtures, "ps")
    snapshot = add_repo(tmp_path / "hub", "me/ps", original_files(config, state, "safetensors", tmp_path))
    backbone, spec = backbone_from_checkpoint(snapshot, {"d_model": 32, "n_layer": 2})
    assert backbone.training and spec["variant"] == "ps"
    check_denoiser_matches_reference(backbone.eval(), expected)
    with pytest.raises(UserError, match="has d_model=32, but the requested model size has d_model=118"):
        backbone_from_checkpoint(snapshot, {"d_model": 118})


def test_download_refused_when_hf_hub_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set"):
        resolve("kuleshov-group/absent", download=True)


SCRIPT = """
import sys
import dnadiff.generate
gen = dnadiff.generate.load(sys.argv[1])
seqs = gen.generate(2, length=24, steps=6, seed=0)
assert len(seqs) == 2 and all(len(s) == 24 and set(s) <= set("ACGT") for s in seqs), seqs
print("lightning" in sys.modules, any(m.startswith(("lightning", "pytorch_lightning")) for m in sys.modules))
"""


@pytest.mark.parametrize("variable", ["HF_HOME", "HF_HUB_CACHE"])
def test_generate_from_a_hub_id_in_the_env_cache_without_lightning(shared_fixtures, tmp_path, variable):
    """In a fresh interpreter: the cache named by HF_HOME (its hub/ folder) or HF_HUB_CACHE is used, offline,
    and neither `import dnadiff.generate` nor loading and sampling imports Lightning."""
    config, state, _ = reference(shared_fixtures, "ps")
    root = tmp_path / "hf"
    add_repo(root / "hub" if variable == "HF_HOME" else root, "kuleshov-group/caduceus-ps_test",
             original_files(config, state, "safetensors", tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update({variable: str(root), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                "DNADIFF_CPU_KERNEL": "0"})  # the pure scan: this tests loading, not the fused CPU kernel
    done = subprocess.run([sys.executable, "-c", SCRIPT, "kuleshov-group/caduceus-ps_test"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_download_goes_through_huggingface_hub_and_its_errors_are_one_line(shared_fixtures, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    config, state, _ = reference(shared_fixtures, "ph")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = []

    def fake_download(repo_id, **kwargs):  # what huggingface_hub would fetch into the cache
        calls.append((repo_id, kwargs))
        return str(add_repo(tmp_path / "hub", repo_id, original_files(config, state, "safetensors", tmp_path)))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    model, _, payload = load_model("kuleshov-group/fetched@main", download=True, cache_dir=tmp_path / "hub")
    (repo_id, kwargs), = calls
    assert repo_id == "kuleshov-group/fetched" and kwargs["revision"] == "main"
    assert kwargs["local_files_only"] is False and set(kwargs["allow_patterns"]) == {
        "config.json", "model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
        "pytorch_model.bin.index.json", "model-*-of-*.safetensors", "pytorch_model-*-of-*.bin"}
    assert payload.original["source"] == "kuleshov-group/fetched@main"

    def no_network(repo_id, **kwargs):
        raise ConnectionError("Temporary failure in name resolution\nmore detail")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    with pytest.raises(UserError, match=r"could not download me/x \(Temporary failure in name resolution\): check"):
        resolve("me/x", download=True, cache_dir=tmp_path / "hub")


def test_download_without_network_says_the_download_failed(tmp_path, monkeypatch):
    """huggingface_hub itself, its endpoint unreachable: it raises LocalEntryNotFoundError, which must not be
    reported as "add --download" when --download was given (issue 27)."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "2")
    assert huggingface_hub.snapshot_download is not None
    with pytest.raises(UserError) as err:
        resolve("me/offline-model", download=True, cache_dir=tmp_path / "hub")
    message = str(err.value)
    assert "\n" not in message and "add --download" not in message
    assert re.search(r"could not download me/offline-model.*(hub could not be reached|check the id, the network)", message)


def test_sample_and_evaluate_commands_take_an_original_folder(shared_fixtures, shared_data, tmp_path, capsys):
    from dnadiff.cli import main

    config, state, _ = reference(shared_fixtures, "ps")
    snapshot = add_repo(tmp_path / "hub", "me/ps", original_files(config, state, "bin", tmp_path))
    out = tmp_path / "s.fa"
    assert main(["sample", "--checkpoint", str(snapshot), "--num", "2", "--length", "40", "--steps", "8",
                 "--seed", "0", "--out", str(out)]) == 0
    seqs = [line for line in out.read_text().splitlines() if not line.startswith(">")]
    assert len(seqs) == 2 and all(len(s) == 40 and set(s) <= set("ACGT") for s in seqs)
    capsys.readouterr()
    hg38 = str(shared_data / "hg38" / "hg38_chr2_1-2333275.fa.gz")
    assert main(["evaluate", "--checkpoint", str(snapshot), "--genome", hg38, "--json", "--max-windows", "2",
                 "--num-t", "1", "--markov-train-windows", "8", "--markov-max-order", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["num_positions"] > 1500 and 1.0 < result["bits_per_nt"] < 4.0  # random weights: near 2 bits
