"""`dnadiff export`: write a model in the original Caduceus Hugging Face format (:func:`dnadiff.export`).

    dnadiff export --checkpoint OUT/model.pt --format hf --out DIR [--code-repo OWNER/NAME]
"""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="model.pt, a pretraining .ckpt, an original Caduceus folder or a Hugging Face hub id")
    p.add_argument("--format", default="hf", choices=("hf",), help="hf: config.json + model.safetensors (Caduceus)")
    p.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    p.add_argument("--code-repo", help="hub repo with the Caduceus remote code for config.auto_map, e.g. "
                                       "kuleshov-group/caduceus-ph_seqlen-131k_d_model-256_n_layer-16")
    p.add_argument("--download", action="store_true", help="fetch a hub id missing from the Hugging Face cache")


def run(args) -> int:
    from dnadiff.checkpoints.export import export

    out, config = export(args.checkpoint, args.out, args.format, args.code_repo, args.download)
    load = ("load with AutoModelForMaskedLM.from_pretrained(DIR, trust_remote_code=True)" if "auto_map" in config
            else "add --code-repo OWNER/NAME for transformers' AutoModelForMaskedLM")
    print(f"exported Caduceus-{'PS' if config['rcps'] else 'Ph'} d_model {config['d_model']} n_layer "
          f"{config['n_layer']} -> {out} (config.json, model.safetensors); {load}")
    return 0
