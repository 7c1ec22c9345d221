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
from dnadiff.errors import UserError


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
        UserError: no fold files, a file that is not a fold file or does not follow its schema (:func:`read_fold`:
            truncated, headerless, hand-edited, of the wrong types; naming the file and the field), folds of different experiments (task, data,
            protocol, config, seed or model differ), a fold twice, or missing folds.
    """
    from dnadiff.finetuning import combine

    folder = Path(folder)
    files = sorted(folder.glob("fold_*.json")) if folder.is_dir() else []
    if not files:
        raise UserError(f"no fold files (fold_K.json) in {folder}: run `dnadiff finetune ... --fold K --out {folder}` first")
    loaded = [(path, read_fold(path)) for path in files]  # each checked against the fold file's schema
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


# ------------------------------------------------------------------ the fold file's schema
class _Bad(Exception):
    def __init__(self, field: str, problem: str):
        super().__init__(field, problem)
        self.field, self.problem = field, problem


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _need(value, field: str, types, what: str):
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _Bad(field, f"is {_kind(value)}, not {what}")
    if not isinstance(value, types):
        raise _Bad(field, f"is {_kind(value)}, not {what}")
    return value


def _int(value, field: str, low: int = 0, high: int | None = None) -> int:
    _need(value, field, int, "an integer")
    if value < low or (high is not None and value > high):
        raise _Bad(field, f"is {value}, outside {low}..{high if high is not None else ''}")
    return value


def _metric(value, field: str) -> float:
    """A metric: a finite number in [-1, 1] (MCC) or [0, 1], or null (NaN written as null) -> float."""
    if value is None:
        return float("nan")
    _need(value, field, (int, float), "a number or null")
    if not math.isfinite(value) or not -1 <= value <= 1:
        raise _Bad(field, f"is {value}, not a metric in [-1, 1]")
    return float(value)


def _metrics(record, field: str, need_n: bool = True) -> dict:
    _need(record, field, dict, "an object")
    for m in METRICS:
        if m not in record:
            raise _Bad(f"{field}.{m}", "is missing")
        record[m] = _metric(record[m], f"{field}.{m}")
    if need_n:
        _int(_get(record, "n", field), f"{field}.n")
    return record


def _get(obj: dict, key: str, field: str):
    if key not in obj:
        raise _Bad(f"{field}.{key}" if field else key, "is missing")
    return obj[key]


def _record(record, field: str, fold: int, header: dict, model: bool) -> dict:
    _metrics(record, field)
    if _int(_get(record, "fold", field), f"{field}.fold") != fold:
        raise _Bad(f"{field}.fold", f"is {record['fold']}, not the file's fold {fold}")
    if "seconds" in record and record["seconds"] is not None:
        _need(record["seconds"], f"{field}.seconds", (int, float), "a number")
    with_test = bool(header["num_test"]) and header["protocol"] == "cv"
    if with_test or record.get("test") is not None:
        _metrics(_get(record, "test", field), f"{field}.test")
    if model:
        _int(_get(record, "best_epoch", field), f"{field}.best_epoch")
        _metrics(_get(record, "val", field), f"{field}.val")
        curve = _need(_get(record, "val_accuracy_per_epoch", field), f"{field}.val_accuracy_per_epoch", list, "a list")
        record["val_accuracy_per_epoch"] = [_metric(v, f"{field}.val_accuracy_per_epoch[{i}]") for i, v in enumerate(curve)]
        if record.get("micro_batch") is not None:
            _int(record["micro_batch"], f"{field}.micro_batch", 1)
        if record.get("optimizer_steps") is not None:
            _int(record["optimizer_steps"], f"{field}.optimizer_steps")
    return record


def check_fold(payload) -> dict:
    """Validate one parsed fold file against its schema (what :func:`write_fold` writes) and return it with
    null metrics read back as NaN. Raises ``_Bad(field, problem)`` for the first field that is missing or of
    the wrong type or range: ``format`` ("dnadiff-finetune-fold/1"); ``header`` (task, protocol "cv" or
    "caduceus", num_classes >= 1 and that many class_names, num_folds >= 1, num_train / num_test >= 0,
    seed, config an object, summary_scope); ``model`` (description, init strings); ``run`` (fold in
    0..num_folds-1; ``model`` null or a record; ``baselines`` an object of records). A record has the four
    metrics (numbers in [-1, 1] or null), ``n`` and ``fold``; the model's also best_epoch, val metrics and
    the per-epoch validation accuracies; with ``cv`` and a test split, ``test`` metrics."""
    _need(payload, "the file", dict, "a JSON object")
    if payload.get("format") != FOLD_FORMAT:
        raise _Bad("format", f"is {payload.get('format')!r}, not {FOLD_FORMAT!r}")
    header = _need(_get(payload, "header", ""), "header", dict, "an object")
    _need(_get(header, "task", "header"), "header.task", str, "a string")
    if _get(header, "protocol", "header") not in ("cv", "caduceus"):
        raise _Bad("header.protocol", f"is {header['protocol']!r}, not 'cv' or 'caduceus'")
    classes = _int(_get(header, "num_classes", "header"), "header.num_classes", 1)
    names = _need(_get(header, "class_names", "header"), "header.class_names", list, "a list")
    if len(names) != classes or not all(isinstance(n, str) for n in names):
        raise _Bad("header.class_names", f"is not a list of {classes} names (header.num_classes)")
    folds = _int(_get(header, "num_folds", "header"), "header.num_folds", 1)
    _int(_get(header, "num_train", "header"), "header.num_train")
    _int(_get(header, "num_test", "header"), "header.num_test")
    _int(_get(header, "seed", "header"), "header.seed")
    _need(_get(header, "config", "header"), "header.config", dict, "an object")
    _need(_get(header, "summary_scope", "header"), "header.summary_scope", str, "a string")
    model = _need(_get(payload, "model", ""), "model", dict, "an object")
    for key in ("description", "init"):
        _need(_get(model, key, "model"), f"model.{key}", str, "a string")
    run = _need(_get(payload, "run", ""), "run", dict, "an object")
    fold = _int(_get(run, "fold", "run"), "run.fold", 0, folds - 1)
    if _get(run, "model", "run") is not None:
        _record(run["model"], "run.model", fold, header, model=True)
    baselines = _need(_get(run, "baselines", "run"), "run.baselines", dict, "an object")
    for name, record in baselines.items():
        _record(record, f"run.baselines.{name}", fold, header, model=False)
    notes = _need(payload.get("notes", []), "notes", list, "a list")
    if not all(isinstance(n, str) for n in notes):
        raise _Bad("notes", "is not a list of strings")
    return payload


def read_fold(path: str | Path) -> dict:
    """One fold file, parsed and validated (:func:`check_fold`); UserError naming the file and the field."""

    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        payload = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        what = "is truncated or not JSON" if isinstance(err, ValueError) else f"is not readable ({err})"
        raise UserError(f"{path} {what} ({str(err)[:100]}): rerun that fold (--fold K --force) or remove the "
                        "file") from None
    try:
        return check_fold(payload)
    except _Bad as bad:
        if bad.field == "format" and isinstance(payload, dict) and "format" not in payload:
            raise UserError(f"{path} is not a dnadiff fold file (no format field; header, model and run expected): "
                            "remove it from the folder or rerun that fold (--fold K --force)") from None
        raise UserError(f"{path}: {bad.field} {bad.problem} (the fold file is damaged or hand-edited): rerun that "
                        "fold (--fold K --force) or restore the file") from None
