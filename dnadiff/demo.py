"""`make demo`: the whole mission on the bundled real data, in a few CPU minutes.

1. pretrain the demo-size Caduceus with masked diffusion on the 2.3 Mb piece of hg38 (data/hg38/);
2. evaluate held-out bits/nt and perplexity beside an order-k Markov baseline on the same positions;
3. generate a few synthetic sequences and compare them with real held-out DNA;
4. fine-tune it on human_enhancers_cohn with 5-fold cross-validation and print the fold table beside the
   k-mer and CNN baselines.

Outputs go to ``demo_out/`` (``demo_out/model.pt`` is the checkpoint the notebook and the
fine-tuning pick up). Environment: DEMO_STEPS (pretraining steps, default from configs/pretrain/demo.yaml),
DEMO_FT_EXAMPLES (fine-tuning subsample, default 600).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from dnadiff.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
GENOME = ROOT / "data" / "hg38" / "hg38_chr2_1-2333275.fa.gz"
ENHANCERS = ROOT / "data" / "genomic_benchmarks" / "human_enhancers_cohn.test.tsv"


def step(title: str, argv: list[str]) -> None:
    print(f"\n=== {title}\n$ dnadiff {' '.join(argv)}", flush=True)
    start = time.time()
    code = cli(argv)
    if code:
        sys.exit(code)
    print(f"({time.time() - start:.0f} s)", flush=True)


def main() -> None:
    out = Path(os.environ.get("DEMO_OUT", ROOT / "demo_out"))
    steps = os.environ.get("DEMO_STEPS")
    pre = ["pretrain", "--genome", str(GENOME), "--config", "demo", "--out", str(out), "--force"]
    step("1. pretrain Caduceus-Ph (demo size) with masked diffusion on hg38 chr2:1-2,333,275",
         pre + (["--max-steps", steps] if steps else []))
    step("2. held-out perplexity vs an order-k Markov baseline (same positions)",
         ["evaluate", "--checkpoint", str(out / "model.pt"), "--genome", str(GENOME), "--split", "test",
          "--max-windows", "64", "--num-t", "4"])
    step("3. generate synthetic DNA and compare it with real held-out sequence",
         ["sample", "--checkpoint", str(out / "model.pt"), "--num", "8", "--length", "512", "--steps", "64",
          "--out", str(out / "samples.fa"), "--force", "--report", "--real", str(GENOME)])
    step("4. fine-tune on human_enhancers_cohn, 5-fold CV, beside k-mer and CNN baselines",
         ["finetune", "--task", "human_enhancers", "--data", str(ENHANCERS), "--checkpoint", str(out / "model.pt"),
          "--folds", "5", "--max-epochs", "2", "--max-examples", os.environ.get("DEMO_FT_EXAMPLES", "600"),
          "--out", str(out / "finetune"), "--force"])
    print((out / "finetune" / "results.md").read_text())
    print(f"\ndemo finished: outputs in {out}")


if __name__ == "__main__":
    main()
