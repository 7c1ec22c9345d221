"""dnadiff.rc: the one reverse-complement module (token ids, padded batches, strings, logits, conjoin)."""
import torch

from dnadiff.data.tokenizer import MASK, PAD, decode, encode, encode_batch
from dnadiff.rc import (COMPLEMENT, conjoin, random_rc, rc_logits, reverse_complement, reverse_complement_str,
                        reverse_complement_valid)


def test_complement_map_is_an_involution_pairing_a_t_and_c_g():
    comp = torch.tensor(COMPLEMENT)
    assert torch.equal(comp[comp], torch.arange(len(COMPLEMENT)))
    assert decode(comp[encode("ACGTN")]) == "TGCAN" and comp[MASK] == MASK and comp[PAD] == PAD


def test_token_and_string_reverse_complement_agree_with_the_textbook_answer():
    assert reverse_complement_str("aaCGTtN") == "NAACGTT"
    assert decode(reverse_complement(encode("AACGTTGN"))) == "NCAACGTT"
    batch = torch.stack([encode("ACCG"), encode("TTTA")])
    assert [decode(r) for r in reverse_complement(batch)] == ["CGGT", "TAAA"]


def test_valid_prefix_reverse_complement_keeps_padding_in_place():
    ids, valid = encode_batch(["ACG", "AACCT", "G"], length=6)
    rc = reverse_complement_valid(ids, valid)
    assert [decode(r) for r in rc] == ["CGTPPP", "AGGTTP", "CPPPPP"]
    assert torch.equal(reverse_complement_valid(rc, valid), ids)  # an involution
    flip = torch.tensor([True, False, True])
    assert [decode(r) for r in random_rc(ids, flip, valid)] == ["CGTPPP", "AACCTP", "CPPPPP"]


def test_rc_logits_maps_the_rc_strand_back_position_by_position():
    logits = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    back = rc_logits(logits)
    # position l, base b of the forward strand = position L-1-l, base complement(b) of the RC strand
    for l in range(3):
        for b in range(4):
            assert back[:, l, b].tolist() == logits[:, 2 - l, COMPLEMENT[b]].tolist()
    assert torch.equal(rc_logits(back), logits)


def test_conjoin_is_rc_invariant_per_sequence_and_rc_equivariant_per_position():
    weights = torch.tensor([1.0, 10.0, 100.0, 1000.0, 0.0, 0.0, 0.0])

    def score(ids):  # not RC-symmetric: position-weighted base weights
        pos = torch.arange(1, ids.shape[1] + 1, dtype=torch.float32)
        return (weights[ids] * pos).sum(-1)

    ids, valid = encode_batch(["ACGGT", "TTAC"], length=5)
    out = conjoin(score, ids, valid)
    torch.testing.assert_close(out, conjoin(score, reverse_complement_valid(ids, valid), valid))
    torch.testing.assert_close(out, (score(ids) + score(reverse_complement_valid(ids, valid))) / 2)

    def per_position(ids):  # [B, L] -> [B, L, 4]: one-hot of the base times its position
        pos = torch.arange(1, ids.shape[1] + 1, dtype=torch.float32)[None, :, None]
        return torch.nn.functional.one_hot(ids.clamp_max(3), 4).float() * pos

    x = torch.stack([encode("ACGGT"), encode("GATTC")])
    y = conjoin(per_position, x, per_position=True)
    torch.testing.assert_close(conjoin(per_position, reverse_complement(x), per_position=True), rc_logits(y))
