"""How tests/data/old_*.pt were made (run once, with dnadiff at commit 43494c5, before issue 13's changes):

    PYTHONPATH=$PWD python tests/data/make_old_models.py

Each file is a ``model.pt`` written by the export path of that commit (``DiffusionModule.export_payload``
+ ``save_checkpoint``), with, beside the payload, a fixed input and the logits the model gave on it
(``reference``), so tests/test_old_model_files.py can prove that such files still load and give the
same outputs. Do not regenerate them with newer code: they stand for files users already have.
"""
import torch

from dnadiff.checkpoints.format import save_checkpoint
from dnadiff.training.diffusion_module import DiffusionModule

SPECS = {
    "old_caduceus_ph.pt": ({"name": "caduceus", "d_model": 8, "n_layer": 1, "variant": "ph",
                            "time_conditioning": True}, {"vocab_size": 4, "schedule": "linear"}),
    "old_caduceus_ps.pt": ({"name": "caduceus", "d_model": 4, "n_layer": 1, "variant": "ps", "num_classes": 2},
                           {"vocab_size": 4, "schedule": "cosine"}),
    "old_transformer_genmd4.pt": ({"name": "transformer", "vocab_size": 7, "num_outputs": 4, "d_model": 8,
                                   "n_layer": 1, "n_head": 2, "max_len": 32, "time_conditioning": True},
                                  {"vocab_size": 4, "schedule": "genmd4", "init_w": [0.5, 1.0, 1.5, 2.0]}),
}

if __name__ == "__main__":
    for name, (model_spec, diffusion_spec) in SPECS.items():
        torch.manual_seed(0)
        module = DiffusionModule(model_spec, diffusion_spec, ema_decay=0.9, data_info={"modality": "dna", "window": 12})
        with torch.no_grad():  # non-trivial weights (zero-initialised heads would give uniform logits)
            for p in module.model.parameters():
                p.add_(0.1 * torch.randn_like(p))
            if module.genmd4 is not None:
                module.genmd4.raw_w.add_(0.1)
        module.ema.update(module.model)
        payload = module.export_payload({"note": "issue-13 fixture"})
        model = module.model
        model.load_state_dict(payload["state_dict"])
        model.eval()
        g = torch.Generator().manual_seed(1)
        z = torch.randint(0, 5, (2, 12), generator=g)
        t = torch.tensor([0.3, 0.8])
        with torch.no_grad():
            logits = model(z, t)
        payload["reference"] = {"z": z, "t": t, "logits": logits}
        save_checkpoint(f"tests/data/{name}", payload)
        print(name, sum(p.numel() for p in model.parameters()))
