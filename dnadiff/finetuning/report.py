"""``results.json`` and ``results.md`` of a fine-tuning run, written atomically.

Both files are first written to temporary files in the output folder and then moved into place
with ``os.replace``, so a reader never sees a half-written file and a failed run leaves none.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from dnadiff.atomic import atomic_write
from dnadiff.eval.classification import METRICS


def _write_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _summary_table(rows: list[tuple[str, dict]]) -> list[str]:
    lines = ["| model | " + " | ".join(f"{m} mean ± std [min, max]" for m in METRICS) + " |",
             "|---" * (1 + len(METRICS)) + "|"]
    for name, summary in rows:
        cells = [f"{_fmt(s['mean'])} ± {_fmt(s['std'])} [{_fmt(s['min'])}, {_fmt(s['max'])}]"
                 for s in (summary[m] for m in METRICS)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def plural(count, word: str, many: str | None = None) -> str:
    """``1 epoch``, ``2 epochs``, ``1,000 steps``: a count with its noun in the right number."""
    text = f"{count:,}" if isinstance(count, int) else str(count)
    return f"{text} {word if count == 1 else (many or word + 's')}"


#: what results.md says about each epoch selection
SELECTION_TEXT = {
    "inner": "Epoch selection: each fold picks its epoch on an inner validation split (10%, stratified, seeded) "
             "of its training folds; the held-out fold is scored once, never seen before (honest).",
    "held-out": "Epoch selection: held-out (optimistic). Each fold reports the epoch that scored best on that "
                "same held-out fold, as the Caduceus and HyenaDNA papers do on their validation split; the "
                "figures are biased upwards. Use --selection inner for an unbiased estimate.",
    "validation": "Epoch selection: on each run's 10% validation re-split; the official test split is scored once.",
}


def render_markdown(results: dict) -> str:
    """A markdown report: one row per fold (validation / held-out fold and test metrics of the model),
    then mean ± std [min, max] of the model and the baselines over the runs."""
    held = "held-out fold" if results["protocol"] == "cv" else "validation"
    has_test = bool(results.get("num_test"))
    selection = results.get("selection")
    optimistic = " (optimistic selection)" if selection == "held-out" else ""
    runs = plural(len(results["folds"]), "run") if results["folds"] else "baselines only"
    lines = [
        f"# {results['task']}: {results['protocol']} fine-tuning, {runs}{optimistic}",
        "",
        f"{results['num_classes']} classes ({', '.join(results['class_names'])}), {results['num_train']} train"
        + (f" / {results['num_test']} test" if has_test else "")
        + f" examples; model: {results['model']['description']}.",
        "",
    ]
    cfg = results.get("config", {})
    if cfg:
        micro = sorted({f.get("micro_batch") for f in results["folds"] if f.get("micro_batch")})
        lines += [f"Batch {cfg.get('batch_size')}" + (f" (micro-batches of {', '.join(map(str, micro))})" if micro else "")
                  + f", lr {cfg.get('lr')}, {plural(cfg.get('epochs'), 'epoch')}, max length {cfg.get('max_length')}.", ""]
    if selection in SELECTION_TEXT:
        lines += [SELECTION_TEXT[selection], ""]
    for note in results.get("notes", []):
        lines += [f"Note: {note}", ""]
    if results["folds"]:
        lines += [
            "| fold | best epoch | " + " | ".join(f"{m} ({held})" for m in METRICS)
            + (" | " + " | ".join(f"{m} (test)" for m in METRICS) if has_test else "") + " |",
            "|---" * (2 + len(METRICS) * (2 if has_test else 1)) + "|",
        ]
        for fold in results["folds"]:
            row = [str(fold["fold"]), str(fold["best_epoch"])] + [_fmt(fold["val"][m]) for m in METRICS]
            if has_test:
                row += [_fmt(fold["test"][m]) for m in METRICS]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    model_name = "dnadiff (" + results["model"]["init"] + ")"
    rows = [(model_name, results["summary"])] if results["folds"] else []
    rows += [(name, base["summary"]) for name, base in results["baselines"].items()]
    lines += [f"Over the {results['summary_scope']}{optimistic}:", ""] + _summary_table(rows)
    if "test_summary" in results:
        rows = [(model_name, results["test_summary"])] if results["folds"] else []
        rows += [(name, base["test_summary"]) for name, base in results["baselines"].items()]
        lines += ["", "On the official test split (each run's model):", ""] + _summary_table(rows)
    return "\n".join(lines) + "\n"


def _jsonable(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_results(out_dir: str | Path, results: dict) -> tuple[Path, Path]:
    """Write ``results.json`` (NaN as null) and ``results.md`` into ``out_dir``; returns both paths."""
    markdown = render_markdown(results)
    payload = json.dumps(_jsonable(results), indent=2) + "\n"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    _write_atomic(md_path, markdown)
    _write_atomic(json_path, payload)
    return json_path, md_path


# ------------------------------------------------------------------ folds as jobs
FOLD_FORMAT = "dnadiff-finetune-fold/1"


def fold_path(out_dir: str | Path, fold: int) -> Path:
    """``OUT/fold_K.json``: the result file of one fold (one job of a SLURM array)."""
    return Path(out_dir) / f"fold_{fold}.json"


def classifier_path(out_dir: str | Path, fold: int) -> Path:
    """``OUT/classifier_fold_K.pt``: the classifier fold K selected (``save_model`` / ``--save-model``)."""
    return Path(out_dir) / f"classifier_fold_{fold}.pt"


def write_fold(out_dir: str | Path, header: dict, model: dict, run: dict, notes: list[str] | None = None) -> Path:
    """Write one fold's results atomically: ``{"format", "header", "model", "run", "notes"}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = fold_path(out, run["fold"])
    payload = {"format": FOLD_FORMAT, "header": header, "model": model, "run": run, "notes": list(notes or [])}
    _write_atomic(path, json.dumps(_jsonable(payload), indent=2) + "\n")
    return path


def _identity(model: dict) -> dict:
    return {k: v for k, v in model.items() if k in ("spec", "variant", "init", "parameters")}


def aggregate(folder: str | Path) -> dict:
    """Merge the ``fold_K.json`` files of ``folder`` into one results dict (see :func:`dnadiff.finetuning.combine`).

    Raises:
        UserError: no fold files, a file that is not a fold file, folds of different experiments (task, data,
            protocol, config, seed or model differ), a fold twice, or missing folds.
    """
    from dnadiff.errors import UserError
    from dnadiff.finetuning import combine

    folder = Path(folder)
    files = sorted(folder.glob("fold_*.json")) if folder.is_dir() else []
    if not files:
        raise UserError(f"no fold files (fold_K.json) in {folder}: run `dnadiff finetune ... --fold K --out {folder}` first")
    loaded = []
    for path in files:
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"{path} is not readable JSON ({err}): rerun that fold with --force") from None
        if not isinstance(payload, dict) or payload.get("format") != FOLD_FORMAT:
            raise UserError(f"{path} is not a dnadiff fold file: remove it from {folder}")
        loaded.append((path, payload))
    first_path, first = loaded[0]
    for path, payload in loaded[1:]:
        for key in sorted(set(first["header"]) | set(payload["header"])):
            if first["header"].get(key) != payload["header"].get(key):
                raise UserError(f"{path.name} and {first_path.name} are different experiments ({key}: "
                                f"{payload['header'].get(key)!r} vs {first['header'].get(key)!r}): "
                                f"keep one experiment's fold files per folder")
        if _identity(payload["model"]) != _identity(first["model"]):
            raise UserError(f"{path.name} and {first_path.name} used different models "
                            f"({payload['model'].get('description')} vs {first['model'].get('description')}): "
                            "keep one experiment's fold files per folder")
    folds = [p["run"]["fold"] for _, p in loaded]
    expected = list(range(int(first["header"]["num_folds"])))
    if sorted(folds) != expected:
        missing = sorted(set(expected) - set(folds))
        raise UserError(f"{folder} holds folds {sorted(folds)} of {len(expected)}: run the missing fold(s) "
                        f"{missing} (--fold K) before aggregating")
    results = combine(first["header"], [p["run"] for _, p in loaded])
    results["model"] = first["model"]
    notes = list(dict.fromkeys(n for _, p in loaded for n in p.get("notes", [])))
    if notes:
        results["notes"] = notes
    return results
