"""``results.json`` and ``results.md`` of a fine-tuning run, written atomically.

Both files are first written to temporary files in the output folder and then moved into place
with ``os.replace``, so a reader never sees a half-written file and a failed run leaves none.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from dnadiff.eval.classification import METRICS


def _write_atomic(path: Path, text: str) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def render_markdown(results: dict) -> str:
    """A markdown report: one row per fold (held-out fold and test metrics), then model and baseline summaries."""
    split = "held-out fold" if results["protocol"] == "cv" else "validation"
    lines = [
        f"# {results['task']}: {results['protocol']} fine-tuning, {len(results['folds'])} runs",
        "",
        f"{results['num_classes']} classes ({', '.join(results['class_names'])}), {results['num_train']} train"
        + (f" / {results['num_test']} test" if results.get("num_test") else "")
        + f" examples; model: {results['model']['description']}.",
        "",
        f"| fold | best epoch | " + " | ".join(f"{m} ({split})" for m in METRICS)
        + (" | " + " | ".join(f"{m} (test)" for m in METRICS) if results.get("num_test") else "") + " |",
        "|---" * (2 + len(METRICS) * (2 if results.get("num_test") else 1)) + "|",
    ]
    for fold in results["folds"]:
        row = [str(fold["fold"]), str(fold["best_epoch"])] + [_fmt(fold[m]) for m in METRICS]
        if results.get("num_test"):
            row += [_fmt(fold["test"][m]) for m in METRICS]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"| model | " + " | ".join(f"{m} mean ± std [min, max]" for m in METRICS) + " |",
              "|---" * (1 + len(METRICS)) + "|"]
    rows = [("dnadiff (" + results["model"]["init"] + ")", results["summary"])] if results["folds"] else []
    rows += [(name, base["summary"]) for name, base in results["baselines"].items()]
    for name, summary in rows:
        cells = [f"{_fmt(s['mean'])} ± {_fmt(s['std'])} [{_fmt(s['min'])}, {_fmt(s['max'])}]"
                 for s in (summary[m] for m in METRICS)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    note = results.get("summary_scope")
    if note:
        lines += ["", f"Summaries are over the {note}."]
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(results)
    payload = json.dumps(_jsonable(results), indent=2) + "\n"
    json_path, md_path = out / "results.json", out / "results.md"
    _write_atomic(md_path, markdown)
    _write_atomic(json_path, payload)
    return json_path, md_path
