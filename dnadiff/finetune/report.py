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


def render_markdown(results: dict) -> str:
    """A markdown report: one row per fold (validation / held-out fold and test metrics of the model),
    then mean ± std [min, max] of the model and the baselines over the runs."""
    held = "held-out fold" if results["protocol"] == "cv" else "validation"
    has_test = bool(results.get("num_test"))
    lines = [
        f"# {results['task']}: {results['protocol']} fine-tuning, {len(results['folds']) or 'baseline-only'} runs",
        "",
        f"{results['num_classes']} classes ({', '.join(results['class_names'])}), {results['num_train']} train"
        + (f" / {results['num_test']} test" if has_test else "")
        + f" examples; model: {results['model']['description']}.",
        "",
    ]
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
    lines += [f"Over the {results['summary_scope']}:", ""] + _summary_table(rows)
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
