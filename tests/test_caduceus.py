"""Caduceus denoiser: exact RC equivariance (PS), conjoining (Ph), conditioning, sizes, and training
inside the diffusion core on real DNA."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
import yaml

from dnadiff.data.tokenizer import MASK, encode
from dnadiff.rc import COMPLEMENT, reverse_complement
from dnadiff.errors import UserError
from dnadiff.models import CaduceusDenoiser, build_model
from dnadiff.models import count_parameters
from dnadiff.models.config import CaduceusConfig, caduceus_spec

PRESETS = CaduceusConfig.PRESETS

REPO = Path(__file__).resolve().parents[1]
COMP4 = torch.tensor(COMPLEMENT[:4])


def tokens(b=3, L=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 4, (b, L), generator=g)
    x[:, ::7] = MASK  # masked positions, as the denoiser sees them
    return x


def rc_of_logits(logits):
    """Reverse complement of per-position logits over A, C, G, T: flip L, permute outputs."""
    return logits.flip(1)[..., COMP4]


def randomize(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("time_conditioning,num_classes", [(False, 0), (True, 3)])
def test_ps_is_exactly_rc_equivariant(time_conditioning, num_classes):
    model = randomize(CaduceusDenoiser(d_model=16, n_layer=2, variant="ps", time_conditioning=time_conditioning,
                                       num_classes=num_classes)).eval()
    x, t = tokens(), torch.rand(3)
    labels = torch.tensor([0, 2, 3]) if num_classes else None
    with torch.no_grad():
        out, out_rc = model(x, t, labels), model(reverse_complement(x), t, labels)
    assert out.shape == (3, 40, 4)
    assert (out_rc - rc_of_logits(out)).abs().max() < 1e-5
    assert (out_rc - out).abs().max() > 1e-2  # not trivially symmetric


def test_ph_is_not_equivariant_but_conjoined_ph_is():
    model = randomize(CaduceusDenoiser(d_model=16, n_layer=2, variant="ph")).eval()
    x, t = tokens(), torch.rand(3)
    with torch.no_grad():
        gap = (model(reverse_complement(x), t) - rc_of_logits(model(x, t))).abs().max()
        model.conjoin = True
        out, out_rc = model(x, t), model(reverse_complement(x), t)
    assert gap > 1e-2
    assert (out_rc - rc_of_logits(out)).abs().max() < 1e-5


def test_rc_augmentation_maps_logits_back_to_the_forward_strand():
    model = randomize(CaduceusDenoiser(d_model=16, n_layer=1, variant="ph", rc_augment=True)).train()
    x, t = tokens(b=8), torch.rand(8)
    plain = model.backbone.logits(model.backbone(x), 4)
    rc = rc_of_logits(model.backbone.logits(model.backbone(reverse_complement(x)), 4))
    out = model(x, t)
    per_row = [torch.allclose(o, p, atol=1e-6) or torch.allclose(o, r, atol=1e-6) for o, p, r in zip(out, plain, rc)]
    assert all(per_row)
    assert not torch.allclose(out, plain, atol=1e-6) or not torch.allclose(out, rc, atol=1e-6)


def test_denoiser_contract_and_conditioning():
    model = CaduceusDenoiser(d_model=16, n_layer=1, num_classes=2, time_conditioning=True)
    assert model.time_conditioned is True
    assert CaduceusDenoiser(d_model=16, n_layer=1).time_conditioned is False
    x, t = tokens(b=2), torch.tensor([0.1, 0.9])
    null = model(x, t)
    assert torch.equal(null, model(x, t, labels=torch.tensor([2, 2])))  # None = null label id num_classes
    assert not torch.allclose(null, model(x, t, labels=torch.tensor([0, 1])))
    assert not torch.allclose(null, model(x, t.flip(0)))
    assert model.features(x).shape == (2, 40, 16)
    assert CaduceusDenoiser(d_model=16, n_layer=1, variant="ps").features(x).shape == (2, 40, 32)


def test_logits_are_the_tied_head_restricted_to_the_real_tokens():
    model = randomize(CaduceusDenoiser(d_model=16, n_layer=1, variant="ph"))
    x = tokens(b=2)
    hidden = model.features(x)
    assert torch.allclose(model(x, torch.zeros(2)), hidden @ model.backbone.embedding.weight[:4].t(), atol=1e-6)


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="variant"):
        CaduceusDenoiser(d_model=8, n_layer=1, variant="pq")
    with pytest.raises(UserError, match="complement map"):
        CaduceusDenoiser(d_model=8, n_layer=1, complement_map=[1, 2, 3, 0, 4, 5, 6])  # not an involution
    with pytest.raises(UserError, match="complement map"):
        CaduceusDenoiser(d_model=8, n_layer=1, complement_map=[4, 2, 1, 3, 0, 5, 6])  # A <-> MASK
    with pytest.raises(UserError, match="unknown model name"):
        build_model({"name": "lstm"})
    with pytest.raises(UserError, match="bad option"):
        build_model({"name": "caduceus", "d_modle": 8})


@pytest.mark.parametrize("size,expected", [("470k", 469_640), ("7m", 7_723_008)])
def test_size_presets_have_the_published_parameter_counts(size, expected):
    for variant in ("ph", "ps"):
        assert count_parameters(build_model(caduceus_spec(size, variant=variant))) == expected
    assert abs(expected - {"470k": 470e3, "7m": 7.7e6}[size]) / expected < 0.01


def test_model_configs_build_the_presets():
    for path in sorted((REPO / "configs" / "model").glob("caduceus_*.yaml")):
        spec = yaml.safe_load(path.read_text())
        size = path.stem.split("_")[1]
        model = build_model(spec)
        assert (model.backbone.d_model, len(model.backbone.layers)) == \
            (PRESETS[size]["d_model"], PRESETS[size]["n_layer"]), path.name


def real_windows(shared_data: Path, n: int, length: int) -> torch.Tensor:
    import pyfaidx

    fasta = pyfaidx.Fasta(str(shared_data / "hg38" / "hg38_chr2_1-2333275.fa.gz"))
    seq = fasta["chr2"]
    rows, start = [], 1_000_000
    while len(rows) < n:
        window = encode(str(seq[start:start + length]))
        start += length
        if (window < 4).all():
            rows.append(window)
    return torch.stack(rows)


@pytest.fixture
def one_thread():
    """Many tiny ops: one intra-op thread avoids OpenMP barrier costs on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["ph", "ps"])
def test_training_in_the_diffusion_core_lowers_the_loss_on_real_dna(shared_data, variant, one_thread):
    from dnadiff.diffusion import MaskedDiffusion, get_schedule

    x = real_windows(shared_data, n=8, length=128)
    model = build_model(caduceus_spec("demo", variant=variant))
    diff = MaskedDiffusion(vocab_size=4, schedule=get_schedule("linear"))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def held_out_loss():
        torch.manual_seed(123)
        with torch.no_grad():
            return float(torch.stack([diff.loss(model, x).loss for _ in range(4)]).mean())

    before = held_out_loss()
    for step in range(20):
        torch.manual_seed(step)
        loss = diff.loss(model, x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert before > 1.3  # about log(4) nats per token before training
    assert after < before - 0.05, (before, after)
