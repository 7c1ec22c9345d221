"""A loaded DNA model (:class:`DNAModel`, what :func:`dnadiff.load` returns for a generative checkpoint):
generation, infilling, scoring and embeddings; the Python API behind ``dnadiff sample``.

    import dnadiff
    model = dnadiff.load("demo_out/model.pt")   # or a .ckpt, an original Caduceus folder, a hub id
    seqs = model.generate(8, length=1000, steps=200, seed=0)            # unconditional
    seqs = model.infill("ACGT" + "N" * 92 + "TTGA", num=4)               # fill the N positions
    seqs = model.generate(4, length=300, prefix="ACGTAC")                # continue a prefix
    seqs = model.generate(4, class_name="K562", guidance=2.0)            # class-conditional
    bits = model.score(seqs).bits_per_base                               # NELBO bound, with standard errors
    vectors = model.embed(seqs)                                          # float32[S, d], RC-invariant
    write_fasta(seqs, "samples.fa")

Lengths beyond the model's window are generated in semi-autoregressive windows (the core's
``max_context``): each new window is conditioned on the last half of the previous one.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dnadiff import scoring
from dnadiff.atomic import atomic_write
from dnadiff.data.info import DataInfo
from dnadiff.data.tokenizer import MASK, NUM_BASES, decode_batch, encode
from dnadiff.diffusion.confidence import ConfidenceOptions
from dnadiff.diffusion.remdm import ReMDMOptions
from dnadiff.diffusion.reverse import SampleStats
from dnadiff.diffusion.sampling import SAMPLERS, Conditioning, Decoding, Windows, state_independent
from dnadiff.errors import ParameterError, UserError
from dnadiff.checkpoints.sources import load_model
from dnadiff.paths import check_writable  # noqa: F401 (the one output-file check; re-exported)
from dnadiff.progress import planned_calls, seconds_per_call
from dnadiff.keys import check_value
from dnadiff.config import SampleConfig

_BASES = set("ACGTacgt")
#: bounds of the sampling options (a larger guidance weight overflows float32 logits; eta is a rate)
#: the sampling settings' types and bounds (the config tree's ``sample`` section)
SAMPLE = SampleConfig.keys()
MAX_GUIDANCE, MAX_TEMPERATURE, MAX_ETA = SAMPLE["guidance"].hi, SAMPLE["temperature"].hi, SAMPLE["eta"].hi


class DNAModel:
    """A loaded DNA denoiser with its diffusion process and checkpoint metadata.

    Args:
        denoiser: the denoiser module (contract of :mod:`dnadiff.diffusion`).
        diffusion: its :class:`dnadiff.diffusion.MaskedDiffusion` (vocabulary of the 4 bases).
        info: the :class:`~dnadiff.data.info.DataInfo` it was trained on (a checkpoint's ``payload.data``); uses
            ``window`` (training length) and ``class_names`` (empty for an unconditional model).
    """

    def __init__(self, denoiser: torch.nn.Module, diffusion, info: DataInfo):
        if not info.kind.caduceus:
            raise UserError(f"this checkpoint models {info.modality}, not DNA: use a checkpoint pretrained on a genome")
        if info.window is None:
            raise UserError("this checkpoint does not record its training window (data.window): re-export it with "
                            "dnadiff, or pretrain a model")
        if diffusion.vocab_size != NUM_BASES:
            raise UserError(f"this checkpoint has a vocabulary of {diffusion.vocab_size} tokens, not the 4 bases: use a DNA checkpoint")
        assert diffusion.mask_id == MASK, "the tokenizer's mask id must be the diffusion's (V = 4)"
        self.denoiser = denoiser.eval()
        self.diffusion = diffusion
        self.info = info
        self.window = int(info.window)
        self.class_names = list(info.class_names)

    @property
    def conditional(self) -> bool:
        """True when the model was trained with class labels (and a null label for guidance)."""
        return bool(self.class_names)

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def _labels(self, num: int, class_name: str | None, guidance: float) -> tuple[torch.Tensor | None, int | None]:
        """Class ids LongTensor[num] (the null id when no class is asked of a conditional model) and the null id."""
        if guidance < 0:
            raise UserError(f"guidance {guidance} is negative: use 0 (none) or a positive weight such as 2")
        if not self.conditional:
            if class_name is not None:
                raise UserError(f"class {class_name!r} asked of a checkpoint trained without classes: drop --class or use a class-conditional checkpoint")
            if guidance > 0:
                raise UserError("guidance needs a class-conditional checkpoint and this one was trained without classes: drop --guidance")
            return None, None
        null = len(self.class_names)
        if class_name is None:
            if guidance > 0:
                raise UserError(f"guidance needs a class: add --class NAME, one of {', '.join(self.class_names)}")
            return torch.full((num,), null, dtype=torch.long), null
        if class_name not in self.class_names:
            raise UserError(f"unknown class {class_name!r}: this checkpoint knows {', '.join(self.class_names)}")
        return torch.full((num,), self.class_names.index(class_name), dtype=torch.long), null

    @staticmethod
    def _fixed(length: int | None, prefix: str | None, template: str | None) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
        """Resolve the length and the fixed tokens LongTensor[L] / fixed positions BoolTensor[L]."""
        if prefix and template:
            raise UserError("both a prefix and a template given: write the prefix into the template and drop --prefix")
        if template is not None:
            unknown = set(template) - _BASES - set("Nn")
            if unknown:
                raise UserError(f"template has letters {''.join(sorted(unknown))!r}: use only A, C, G, T (kept) and N (filled)")
            if "N" not in template.upper():
                raise UserError("template has no N: mark the positions to generate with N")
            if length is not None and length != len(template):
                raise UserError(f"--length {length} differs from the template's length {len(template)}: drop --length")
            tokens = encode(template)
            return len(template), tokens, tokens < NUM_BASES
        if length < 1:
            raise UserError(f"length {length} is not positive: pass --length of at least 1")
        if prefix:
            if set(prefix) - _BASES:
                raise UserError("prefix has letters other than A, C, G, T: to fill positions use --template with N")
            if len(prefix) > length:
                raise UserError(f"prefix ({len(prefix)} bp) is longer than --length {length}: raise --length or shorten the prefix")
            tokens = torch.zeros(length, dtype=torch.long)
            tokens[: len(prefix)] = encode(prefix)
            fixed_mask = torch.zeros(length, dtype=torch.bool)
            fixed_mask[: len(prefix)] = True
            return length, tokens, fixed_mask
        return length, None, None

    @torch.no_grad()
    def generate(
        self,
        num: int,
        length: int | None = None,
        steps: int | None = None,
        sampler: str = "cached",
        temperature: float = 1.0,
        top_p: float = 1.0,
        prefix: str | None = None,
        template: str | None = None,
        class_name: str | None = None,
        guidance: float = 0.0,
        seed: int | None = None,
        as_strings: bool = True,
        batch_size: int = 256,
        remdm=None,
        confidence=None,
        guide=None,
        target: str | None = None,
        gamma: float = 1.0,
        guide_form: str = "exact",
        stats: SampleStats | None = None,
    ) -> list[str] | torch.Tensor:
        """Generate ``num`` sequences.

        Args:
            num: number of sequences.
            length: L in bases (default: the template's length, else the model's window).
            steps: reverse steps per window (default min(L, window): about one base per step).
            sampler: ``"cached"`` (exact, reuses denoiser outputs when the model is not
                time-conditioned), ``"ancestral"``, ``"first-hitting"`` (exact, one call per
                reveal; ``steps=0`` reveals one base per call with no time grid), ``"remdm"``
                (ReMDM remasking, ``remdm`` options; more steps than bases keep improving) or
                ``"confidence"`` (top-k by confidence, LLaDA-style, ``confidence`` options; not
                an exact sampler of the model).
            temperature, top_p: applied to the denoiser's distribution before each draw.
            prefix: A/C/G/T bases kept at the start. template: a length-L string whose N
                positions are generated and whose A/C/G/T are kept.
            class_name, guidance: class to generate (conditional checkpoints) and the
                classifier-free guidance weight w >= 0.
            seed: seed of the draws (the same seed gives the same sequences).
            batch_size: sequences generated together.
            guide, target, gamma, guide_form: classifier guidance (:mod:`dnadiff.design`): a saved
                :class:`~dnadiff.finetuning.classifier.Classifier`, the class to design toward, the
                strength gamma and the form (``"exact"``: the classifier on the 4 candidate bases of
                every position revealed, 4 rows each; ``"first-order"``: one gradient per step).
                Exact samplers only (cached, ancestral, first-hitting); composes with templates,
                CFG and windows; ``stats`` counts ``classifier_calls`` / ``classifier_rows``.
            stats: a :class:`~dnadiff.diffusion.SampleStats` the calls of every batch are added to
                (``denoiser_calls``, ``rows_evaluated``, ``classifier_calls``, ``classifier_rows``; ``steps`` as
                sampled, None for first-hitting with ``steps=0``).
        Returns:
            ``num`` strings over A/C/G/T, or LongTensor[num, L] of ids 0..3 with ``as_strings=False``.
        Raises:
            UserError: for any inconsistent request (one line naming the fix).
        """
        guidance = check_value(guidance, "guidance", SAMPLE["guidance"])  # finite, bounded: no NaN, no overflow
        temperature = check_value(temperature, "temperature", SAMPLE["temperature"])
        if length is None and template is None:
            length = self.window
        length, fixed, fixed_mask = self._fixed(length, prefix, template)
        if num < 1:
            raise UserError(f"--num {num} is not positive: ask for at least 1 sequence")
        if batch_size < 1:
            raise UserError(f"--batch-size {batch_size} is not positive: generate at least 1 sequence at a time")

        if sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
        if sampler in ("first-hitting", "remdm") and not state_independent(self.diffusion):
            raise UserError(f"the {sampler} sampler needs a state-independent schedule and this checkpoint uses "
                            "GenMD4's learned per-base schedule: use --sampler cached or ancestral")
        if not temperature > 0:
            raise UserError(f"temperature {temperature} must be positive: 1.0 samples the model as trained")
        if not 0 < top_p <= 1:
            raise UserError(f"top-p {top_p} must be in (0, 1]: 1.0 keeps every base")
        steps = steps if steps is not None else min(length, self.window)
        if steps == 0 and sampler == "first-hitting":
            steps = None  # one base per call, no time grid
        elif steps < 1:
            raise UserError(f"--steps {steps} is not positive: use at least 1 (about the window length is exact-quality)")
        labels, null = self._labels(num, class_name, guidance)
        device = self.device
        guiding = None
        if guide is not None:
            from dnadiff.design import build_guidance, check_guide_length

            if sampler not in ("cached", "ancestral", "first-hitting"):
                raise UserError(f"classifier guidance needs an exact sampler: use --sampler cached, ancestral or "
                                f"first-hitting, not {sampler}")
            if not state_independent(self.diffusion):
                raise UserError("classifier guidance needs a state-independent schedule and this checkpoint uses "
                                "GenMD4's learned per-base schedule")
            guiding = build_guidance(guide.to(device), target, gamma, guide_form)
            check_guide_length(guide, length)
        generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        options = {"remdm": remdm, "confidence": confidence}.get(sampler)
        outputs = []
        for start in range(0, num, batch_size):
            n = min(batch_size, num - start)
            conditioning = Conditioning(
                fixed=None if fixed is None else fixed.expand(n, -1).to(device),
                fixed_mask=None if fixed_mask is None else fixed_mask.expand(n, -1).to(device),
                labels=None if labels is None else labels[start : start + n].to(device),
                guidance=guidance, null_label=null, guide=guiding,
            )
            tokens = self.diffusion.sample(
                self.denoiser, num=n, length=length, steps=steps, sampler=sampler, options=options,
                decoding=Decoding(temperature=temperature, top_p=top_p), conditioning=conditioning,
                windows=Windows(self.window), generator=generator, stats=stats,
            )
            outputs.append(tokens.cpu())
        tokens = torch.cat(outputs)
        return decode_batch(tokens) if as_strings else tokens

    def infill(self, template: str, num: int = 1, **options) -> list[str]:
        """``num`` completions of ``template`` (a string whose N positions are generated; A/C/G/T kept), with the
        options of :meth:`generate` (steps, sampler, seed, class_name, guidance, ...)."""
        return self.generate(num, template=template, **options)

    def score(self, seqs: Sequence[str], num_t: int = 8, **options):
        """Per-sequence NELBO in bits per base with its standard error over ``num_t`` draws
        (:func:`dnadiff.scoring.score`: a ``SequenceScores``)."""

        return scoring.score(self, seqs, num_t=num_t, **options)

    def embed(self, seqs: Sequence[str], layer: int | None = None, **options) -> np.ndarray:
        """One vector per sequence, float32[S, d]: the pooled hidden state (``layer``: which block, default the
        last), reverse-complement invariant (both strands averaged for Ph, invariant pooling for PS);
        :func:`dnadiff.scoring.embed`."""

        return scoring.embed(self, seqs, layer=layer, **options)

    def variant_effects(self, variants, genome, **options):
        """Zero-shot variant effects (log-likelihood ratios) of a VCF / TSV / records against ``genome``;
        :func:`dnadiff.scoring.variant_effects`."""

        return scoring.variant_effects(self, variants, genome, **options)

    def estimate(self, num: int, length: int | None = None, steps: int | None = None, batch_size: int = 256,
                 guidance: float = 0.0, template: str | None = None) -> tuple[int, float]:
        """(denoiser calls at most, estimated seconds) of a :meth:`generate` request on this model's device: the
        calls counted from the windows and steps, one call timed on the device."""

        length = length or (len(template) if template else self.window)
        steps = steps or min(length, self.window)
        calls = planned_calls(num, length, steps, self.window, batch_size)
        rows = min(batch_size, num) * (2 if guidance > 0 else 1)
        per_call = seconds_per_call(self.denoiser, self.diffusion.vocab_size, rows, min(length, self.window),
                                    self.conditional, self.device)
        return calls, calls * per_call

    @torch.no_grad()
    def bits_per_base(self, seqs: Sequence[str], num_t: int = 8, class_name: str | None = None,
                      batch_size: int = 128, seed: int = 0) -> np.ndarray:
        """NELBO of each sequence under the model, in bits per A/C/G/T base: float64[S].

        A Monte-Carlo estimate over ``num_t`` stratified times (an upper bound on the model's
        negative log-likelihood). Sequences longer than the window are cut into consecutive
        pieces of at most the window, scored separately and summed. Conditional models score
        under ``class_name`` (default: the null, i.e. unconditional, label). N is not counted; a
        sequence without any A/C/G/T (empty or all N) has no defined rate: NaN, with a warning.
        """
        pieces, owners = [], []
        for i, s in enumerate(seqs):
            for start in range(0, len(s), self.window):
                pieces.append(s[start : start + self.window])
                owners.append(i)
        labels_all, _ = self._labels(batch_size, class_name, 0.0)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        nats = np.zeros(len(seqs))
        bases = np.zeros(len(seqs))
        for same_length in _group_by_length(pieces):
            for start in range(0, len(same_length), batch_size):
                rows = same_length[start : start + batch_size]
                x = torch.stack([encode(pieces[i]) for i in rows]).to(self.device)
                loss_mask = x < NUM_BASES
                labels = None if labels_all is None else labels_all[: len(rows)].to(self.device)
                piece_nats = self.diffusion.nelbo(self.denoiser, x, num_t=num_t, loss_mask=loss_mask, labels=labels,
                                                  generator=generator)
                np.add.at(nats, [owners[i] for i in rows], piece_nats.double().cpu().numpy())
                np.add.at(bases, [owners[i] for i in rows], loss_mask.sum(-1).cpu().numpy())
        bits = np.full(len(seqs), math.nan)
        scored = bases > 0
        bits[scored] = nats[scored] / bases[scored] / math.log(2)
        if not scored.all():
            warnings.warn(f"{int((~scored).sum())} of {len(seqs)} sequences have no A/C/G/T base (empty or all N): "
                          f"their bits_per_base is NaN", stacklevel=2)
        return bits


def _group_by_length(seqs: Sequence[str]) -> list[list[int]]:
    """Indices of ``seqs`` grouped by sequence length."""
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
        groups.setdefault(len(s), []).append(i)
    return list(groups.values())



def load(checkpoint: str | Path, device: str | torch.device | None = None, download: bool = False) -> DNAModel:
    """Load a generative model into a :class:`DNAModel` (on ``device``, default CPU): a dnadiff ``model.pt`` or
    ``.ckpt``, an original Caduceus folder or a Hugging Face hub id (``download`` allows fetching it), see
    :func:`dnadiff.checkpoints.sources.load_model`. :func:`dnadiff.load` also reads fine-tuned classifiers."""

    denoiser, diffusion, payload = load_model(checkpoint, download=download)
    return DNAModel(denoiser.to(device or "cpu"), diffusion, payload.data)


def sampler_options(remdm_strategy: str = "loop", eta: float | None = None, block_length: int | None = None,
                    sampler: str | None = None) -> dict:
    """The ReMDM and confidence options of :meth:`DNAModel.generate` (``remdm=``, ``confidence=``), checked; with
    ``sampler``, an option the sampler does not read (``eta`` without remdm, ``block_length`` without confidence) is
    a ParameterError naming the sampler it needs."""
    if eta is not None:
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta > MAX_ETA:
            raise ParameterError("eta", f"eta={eta} is not allowed: use a number in [0, {MAX_ETA:g}] (ReMDM's "
                                        "remasking rate)")
        if sampler is not None and sampler != "remdm":
            raise ParameterError("eta", f"eta={eta:g} is ReMDM's remasking rate and sampler {sampler!r} does not remask: "
                                        "use sampler remdm (--sampler remdm) or drop it")
    if block_length is not None and sampler is not None and sampler != "confidence":
        raise ParameterError("block_length", f"block_length={block_length} sets the confidence sampler's blocks and "
                                             f"sampler {sampler!r} has none: use sampler confidence (--sampler "
                                             "confidence) or drop it")

    try:
        return {"remdm": ReMDMOptions(remdm_strategy, eta), "confidence": ConfidenceOptions(block_length=block_length)}
    except ValueError as err:
        raise UserError(f"{err}: fix --eta / --block-length") from None


def write_fasta(seqs: Sequence[str], path: str | Path, names: Sequence[str] | None = None, width: int = 80) -> Path:
    """Write sequences as FASTA atomically (a temporary file in the same folder, then a rename).

    Args:
        seqs: S sequences. names: S record names (default ``sample_0``, ``sample_1``, ...).
        width: bases per line (0 for one line per sequence).
    Returns:
        the path written. Nothing is left at ``path`` (nor a temporary file) when writing fails.
    """
    path = check_writable(path)
    names = list(names) if names is not None else [f"sample_{i}" for i in range(len(seqs))]
    if len(names) != len(seqs):
        raise ValueError("one name per sequence is needed")
    lines = []
    for name, seq in zip(names, seqs):
        lines.append(f">{name}")
        step = width if width > 0 else max(len(seq), 1)
        lines.extend(seq[i : i + step] for i in range(0, len(seq), step))
    text = "\n".join(lines) + "\n"
    try:
        atomic_write(path, lambda handle: handle.write(text.encode()))
    except OSError as err:
        raise UserError(f"could not write {path} ({err.strerror}): choose another --out") from None
    return path
