"""DNA design with a saved classifier: the guide adapter reads one-hot inputs exactly as the classifier reads
tokens, noisy fine-tuning is recorded, guided generation keeps templates and reproduces the unguided draws at
gamma = 0, and ``sample --guide ... --report --oracle`` runs end to end (user errors: one line, exit 2)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from conftest import REPO

import dnadiff
from dnadiff.data.tokenizer import MASK, encode
from dnadiff.errors import ParameterError, UserError

GENOME = REPO / "data" / "hg38" / "hg38_chr2_1-2333275.fa.gz"
TABLE = REPO / "data" / "genomic_benchmarks" / "human_enhancers_cohn.test.tsv"


def test_mask_at_random_level_masks_valid_positions_at_uniform_levels():
    from dnadiff.finetuning.finetune_module import mask_at_random_level

    tokens = torch.randint(4, (4000, 50))
    valid = torch.ones_like(tokens, dtype=torch.bool)
    valid[:, 40:] = False
    z = mask_at_random_level(tokens, valid, torch.Generator().manual_seed(0))
    masked = z == MASK
    assert not masked[:, 40:].any() and torch.equal(z[~masked], tokens[~masked])
    frac = masked[:, :40].float().mean(1)  # per-row level t ~ U(0, 1): mean 1/2, variance 1/12 + binomial noise
    assert abs(frac.mean().item() - 0.5) < 0.02
    assert abs(frac.var().item() - (1 / 12 + (1 / 6) / 40)) < 0.01


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("design")
    handlers = list(logging.getLogger().handlers)
    model = dnadiff.pretrain(GENOME, config="demo", out=root / "pre", max_steps=2, progress=None,
                             overrides={"train.val_every": 2, "data.max_eval_windows": 4, "data.window": 64})
    assert logging.getLogger().handlers == handlers
    common = dict(data=TABLE, checkpoint=model.model_path, folds=2, max_epochs=1, max_examples=40, baselines=False,
                  save_model=True, max_length=64, progress=None, accelerator="cpu")
    guide = dnadiff.finetune("human_enhancers", out=root / "guide", noisy=True, seed=1, **common)
    oracle = dnadiff.finetune("human_enhancers", out=root / "oracle", seed=2, **common)
    return model.model_path, guide.classifier_paths[0], oracle.classifier_paths[1]


@pytest.mark.slow
def test_guide_adapter_equals_the_classifier_and_guided_generation(parts, tmp_path):
    from dnadiff.design import ClassifierGuide, build_guidance, guide_fill, oracle_scores
    from dnadiff.diffusion import SampleStats

    model_path, guide_path, oracle_path = parts
    guide, oracle, model = dnadiff.load(guide_path), dnadiff.load(oracle_path), dnadiff.load(model_path)
    assert guide.info.noisy is True and oracle.info.noisy is False
    target = guide.class_names[1]
    seqs = ["ACGT" * 16, "GGCA" * 16, "TTAC" * 8 + "GATC" * 8]
    x = torch.nn.functional.one_hot(torch.stack([encode(s) for s in seqs]), 5).float()
    lp = ClassifierGuide(guide, target)(x, torch.zeros(3))
    np.testing.assert_allclose(lp.detach().exp().numpy(), guide.predict_proba(seqs)[:, 1], rtol=1e-4, atol=1e-6)
    assert build_guidance(guide, target).fill == "mask" and build_guidance(oracle, target).fill == "x0"

    template = "ACGTAC" + "N" * 52 + "TTGACA"
    opts = dict(template=template, steps=8, seed=5, sampler="cached")
    plain = model.generate(6, **opts)
    zero = model.generate(6, guide=guide, target=target, gamma=0.0, **opts)
    assert zero == plain  # gamma = 0: exactly the unguided draws
    for form, sampler in (("exact", "cached"), ("exact", "first-hitting"), ("first-order", "ancestral")):
        if True:
            stats = SampleStats()
            out = model.generate(3, guide=guide, target=target, gamma=5.0, guide_form=form,
                                 **{**opts, "sampler": sampler}, stats=stats)
            assert all(s[:6] == "ACGTAC" and s[-6:] == "TTGACA" and len(s) == 64 for s in out)
            assert stats.classifier_calls > 0 and guide_fill(guide) == "mask"
            if form == "exact":
                # 4 candidates per base revealed (a log-linear schedule starts a few bases from the uniform prior)
                assert stats.classifier_rows % 4 == 0 and 0.8 * 3 * 52 * 4 <= stats.classifier_rows <= 3 * 52 * 4
    scores = oracle_scores(oracle, plain, target)
    assert 0 <= scores["oracle_target_rate"] <= 1 and scores["num_scored"] == 6
    with pytest.raises(ParameterError, match="target"):
        model.generate(2, guide=guide, target="nope", **opts)
    with pytest.raises(UserError, match="exact sampler"):
        model.generate(2, guide=guide, target=target, **{**opts, "sampler": "confidence"})
    with pytest.raises(UserError, match="reads 64 bases"):
        model.generate(2, length=100, guide=guide, target=target)


@pytest.mark.slow
def test_sample_cli_with_guide_and_oracle(parts, tmp_path, capsys):
    from dnadiff.cli import main

    model_path, guide_path, oracle_path = parts
    target = dnadiff.load(guide_path).class_names[1]
    out = tmp_path / "d.fa"
    rc = main(["sample", "--checkpoint", str(model_path), "--num", "4", "--length", "64", "--steps", "8",
               "--guide", str(guide_path), "--target", target, "--gamma", "2", "--report", "--oracle", str(oracle_path),
               "--seed", "0", "--json", "--out", str(out)])
    assert rc == 0 and out.read_text().count(">") == 4
    lines = capsys.readouterr().out.strip().splitlines()
    assert "classifier calls" in lines[1]
    metrics = json.loads(lines[-1])
    assert {"guided_oracle_target_rate", "unguided_oracle_target_rate", "guided_oracle_mean_log_odds"} <= set(metrics)
    rc = main(["sample", "--checkpoint", str(model_path), "--num", "2", "--length", "64", "--guide", str(guide_path),
               "--target", "nope", "--out", str(tmp_path / "e.fa")])
    err = capsys.readouterr().err
    assert rc == 2 and "--target" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_guidance_strength_is_finite_and_bounded():
    """gamma goes through the one value checker: NaN, infinity and overflowing strengths are refused, naming it."""
    from dnadiff.design import build_guidance
    from dnadiff.errors import ParameterError

    for gamma in (float("nan"), float("inf"), 1e308, -1.0):
        with pytest.raises(ParameterError, match=r"^gamma=") as err:
            build_guidance(object(), "x", gamma=gamma)
        assert err.value.parameter == "gamma"
