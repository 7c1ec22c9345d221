#!/usr/bin/env bash
# One GPU check of dnadiff, from a fresh checkout, in about 8 minutes:
#
#     bash benchmarks/gpu_check.sh OUTDIR
#
# Everything goes under OUTDIR: one log per step, steps.tsv (rc and seconds of every step) and
# gpu_check.json; the last line printed is ONE JSON line with all figures. Steps (each with its own
# time limit; a failure or a timeout is recorded in the JSON and the next step runs):
#   env        GPU, torch, triton, mamba-ssm, the scan kernels=auto picks
#   install    pip install --no-deps -e . and the wheels in .whl/ (see README, "GPU check")
#   pytest     pytest -m gpu (kernel parity, bf16 training step, CLI on the GPU)
#   backbone   benchmarks/backbone.py --device cuda: 470k Caduceus-Ph and 7M Caduceus-PS, 1k and 16k tokens,
#              train and inference tokens/s for every available scan (pure, triton, mamba-ssm)
#   pretrain   dnadiff pretrain on the bundled hg38 piece, 470k config, bf16, about PRETRAIN_S seconds
#   finetune   one fine-tuning run (protocol caduceus, 1 seed) on the bundled enhancer table
#   sample     benchmarks/sample.py and dnadiff sample with the pretrained model
#   long_context  benchmarks/long_context.py --device cuda: 470k and 7M at 1k/16k/131k (1M inference), peak GPU
#              memory and tokens/s with and without activation checkpointing
# Environment:
#   PYTHON=python3      interpreter (with torch + CUDA; lightning, triton expected, else from .whl/)
#   BUDGET_S=480        wall-clock budget of the steps above (each step's limit is cut to what is left)
#   PRETRAIN_S=120      target length of the pretraining run
#   BUILD_MAMBA=1       first build causal-conv1d and mamba-ssm for this GPU's architecture only
#                       (sources from .whl/*.tar.gz or pip download), within MAMBA_BUILD_S=900 seconds,
#                       outside the budget; used by every later step when it imports
#   DRY_RUN=1           run the same steps on the CPU at toy sizes (checks this script; no GPU figures)
#   SKIP_INSTALL=1      use the environment as it is (no pip)
set -u
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUTDIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-480}
PRETRAIN_S=${PRETRAIN_S:-120}
DRY_RUN=${DRY_RUN:-0}
MAMBA_BUILD_S=${MAMBA_BUILD_S:-900}
RESERVE_S=10
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # runs from the checkout even if the install fails
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=${TRITON_DEFAULT_FP_FUSION:-1}
export DNADIFF_CPU_KERNEL=${DNADIFF_CPU_KERNEL:-0}  # no C++ CPU-scan build: this check is about the GPU paths
unset TRITON_INTERPRET
STEPS="$OUT/steps.tsv"
printf 'step\trc\tseconds\tlimit_s\n' > "$STEPS"
GENOME="$REPO/data/hg38/hg38_chr2_1-2333275.fa.gz"
ENHANCERS="$REPO/data/genomic_benchmarks/human_enhancers_cohn.test.tsv"
if [ "$DRY_RUN" = 1 ]; then ACC=cpu; DEV=cpu; else ACC=gpu; DEV=cuda; fi
START=$(date +%s)

# run_step NAME LIMIT_S CMD...: runs CMD with a time limit cut to the budget left, output in OUT/NAME.log
run_step() {
    local name=$1 limit=$2 left rc t0 t1
    shift 2
    left=$(( BUDGET_S - ($(date +%s) - START) - RESERVE_S ))
    if [ "$left" -lt 20 ]; then
        printf '%s\tskipped\t0\t0\n' "$name" >> "$STEPS"
        echo "[gpu_check] $name: skipped (budget spent)"
        return 99
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "[gpu_check] $name (limit ${limit}s)"
    t0=$(date +%s.%N)
    timeout --kill-after=15 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')" "$limit" >> "$STEPS"
    [ "$rc" -ne 0 ] && echo "[gpu_check] $name: rc=$rc (see $OUT/$name.log)"
    return "$rc"
}

# has_option COMMAND OPTION: does `dnadiff COMMAND` accept OPTION on this checkout?
has_option() { "$PY" -m dnadiff.cli "$1" --help 2>/dev/null | grep -q -- "$2"; }

# ---- optional: mamba-ssm for this GPU only (outside the budget) -----------------------------------------
build_mamba() {
    local arch src
    arch=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())') || return 1
    mkdir -p "$OUT/mamba_build" && cd "$OUT/mamba_build" || return 1
    for pkg in causal_conv1d mamba_ssm; do
        src=$(ls "$REPO"/.whl/${pkg}-*.tar.gz "$REPO"/.whl/${pkg//_/-}-*.tar.gz 2>/dev/null | head -n 1)
        if [ -z "$src" ]; then
            "$PY" -m pip download --no-deps --no-binary :all: -d . "${pkg//_/-}" || return 1
            src=$(ls ./${pkg}-*.tar.gz ./${pkg//_/-}-*.tar.gz 2>/dev/null | head -n 1)
        fi
        rm -rf "src_$pkg" && mkdir "src_$pkg" && tar -xzf "$src" -C "src_$pkg" --strip-components=1 || return 1
        # keep only this GPU's architecture among the -gencode flags that setup.py hard-codes
        "$PY" - "src_$pkg/setup.py" "${arch/./}" <<'PYEOF' || return 1
import re, sys
path, arch = sys.argv[1], sys.argv[2]
text = open(path).read()
pair = re.compile(r'^([ \t]*)cc_flag\.append\("-gencode"\)[ \t]*\n[ \t]*cc_flag\.append\("arch=compute_(\d+)a?,code=sm_\d+a?"\)',
                  re.M)
text = pair.sub(lambda m: m.group(0) if m.group(2) == arch else m.group(1) + "pass", text)  # blocks stay non-empty
open(path, "w").write(text)
PYEOF
        (cd "src_$pkg" && TORCH_CUDA_ARCH_LIST="$arch" MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE \
            MAX_JOBS=$(nproc) "$PY" -m pip install --no-build-isolation --no-deps -v .) || return 1
    done
    cd "$REPO" && "$PY" -c 'from mamba_ssm.ops.selective_scan_interface import selective_scan_fn'
}
if [ "${BUILD_MAMBA:-0}" = 1 ] && [ "$DRY_RUN" != 1 ]; then
    echo "[gpu_check] mamba_build (limit ${MAMBA_BUILD_S}s, outside the budget)"
    t0=$(date +%s)
    timeout --kill-after=30 "$MAMBA_BUILD_S" bash -c "$(declare -f build_mamba); OUT='$OUT' REPO='$REPO' PY='$PY' build_mamba" \
        > "$OUT/mamba_build.log" 2>&1
    printf 'mamba_build\t%s\t%s\t%s\n' "$?" "$(( $(date +%s) - t0 ))" "$MAMBA_BUILD_S" >> "$STEPS"
    cd "$REPO" || exit 1
    START=$(date +%s)
fi

# ---- install ------------------------------------------------------------------------------------------------
install() {
    local whl
    "$PY" -m pip install --no-deps --no-index --find-links .whl -e . \
        || "$PY" -m pip install --no-deps -e . \
        || "$PY" -m pip install --no-deps --no-build-isolation -e . \
        || echo "editable install failed: running from the checkout through PYTHONPATH"
    # wheels of pure-Python dependencies the image may lack; a distribution already present is kept
    for whl in .whl/*.whl; do
        [ -e "$whl" ] || continue
        "$PY" - "$whl" <<'PYEOF' && "$PY" -m pip install --no-deps "$whl"
import sys
from importlib import metadata
name = sys.argv[1].split("/")[-1].split("-")[0]
try:
    metadata.version(name)
    sys.exit(1)  # installed already
except metadata.PackageNotFoundError:
    sys.exit(0)
PYEOF
    done
    "$PY" - <<'PYEOF'
import importlib, json
mods = ["torch", "lightning", "numpy", "yaml", "rich", "pyfaidx", "Bio", "sklearn", "scipy", "safetensors",
        "huggingface_hub", "genomic_benchmarks", "pytest", "triton", "dnadiff"]
missing = []
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as error:  # noqa: BLE001
        missing.append(f"{m}: {type(error).__name__}")
print("MISSING_MODULES=" + json.dumps(missing))
PYEOF
}
if [ "${SKIP_INSTALL:-0}" = 1 ]; then
    printf 'install\tskipped\t0\t0\n' >> "$STEPS"
else
    run_step install 150 bash -c "$(declare -f install); PY='$PY' install"
fi

run_step env 60 "$PY" - "$OUT/env.json" <<'PYEOF'
import json, subprocess, sys
import torch
from dnadiff.ops import scan, triton_scan
info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
        "triton": getattr(triton_scan.triton, "__version__", None), "triton_scan_available": triton_scan.available(),
        "mamba_ssm_available": scan._mamba_scan is not None, "python": sys.version.split()[0]}
if torch.cuda.is_available():
    x = torch.zeros(1, device="cuda")
    info.update(gpu=torch.cuda.get_device_name(), capability="%d.%d" % torch.cuda.get_device_capability(),
                gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1),
                auto_backend=scan.scan_backend(x, "auto"))
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001
        pass
json.dump(info, open(sys.argv[1], "w"))
print(json.dumps(info))
PYEOF

# ---- tests -------------------------------------------------------------------------------------------------
# one Triton config here (correctness; fewer compilations): the benchmarks below autotune
run_step pytest 200 env DNADIFF_TRITON_AUTOTUNE=0 "$PY" -m pytest -m gpu -q -p no:cacheprovider -o addopts="" -rfEs \
    --junitxml="$OUT/pytest_gpu.xml" tests

# ---- backbone speed ------------------------------------------------------------------------------------------
if [ "$DRY_RUN" = 1 ]; then
    run_step backbone_470k 120 "$PY" benchmarks/backbone.py --grid --sizes demo --variants ph --lengths 64,128 \
        --tokens 256 --repeats 1
    run_step backbone_7m 120 "$PY" benchmarks/backbone.py --grid --sizes demo --variants ps --lengths 64 \
        --tokens 128 --repeats 1
else
    run_step backbone_470k 120 "$PY" benchmarks/backbone.py --device cuda --sizes 470k --variants ph \
        --lengths 1024,16384 --tokens 16384 --repeats 3
    run_step backbone_7m 150 "$PY" benchmarks/backbone.py --device cuda --sizes 7m --variants ps \
        --lengths 1024,16384 --tokens 16384 --repeats 2
fi

# ---- pretraining: steps for about PRETRAIN_S seconds from the backbone's measured training speed ---------------
STEPS_N=$("$PY" - "$OUT/backbone_470k.log" "$PRETRAIN_S" "$DRY_RUN" <<'PYEOF'
import json, sys
log, seconds, dry = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
if dry:
    print(5)
    raise SystemExit
best = 0
try:
    result = json.loads(open(log).read().strip().splitlines()[-1])
    best = max(r.get("train_tokens_per_s", 0) for k, r in result.items() if "_L1024_" in k and isinstance(r, dict))
except Exception:  # noqa: BLE001
    pass
# the 470k config: 32 x 1024 tokens a step; about 60 % of the bare backbone speed (loss, optimizer, EMA, data)
print(max(50, int(seconds * 0.6 * best / (32 * 1024))) if best else 300)
PYEOF
)
if [ "$DRY_RUN" = 1 ]; then
    PRE_ARGS=(--config demo --max-steps "$STEPS_N" model.d_model=16 model.n_layer=1 data.window=128 data.batch_size=4
              data.max_eval_windows=4 train.val_every=1000 train.ckpt_every=1000 --accelerator cpu)
else
    PRE_ARGS=(--config 470k --max-steps "$STEPS_N" data.max_eval_windows=64 train.val_every=100000
              train.ckpt_every=100000 optim.warmup_steps=50 --accelerator gpu --devices 1)
fi
run_step pretrain $(( PRETRAIN_S + 120 )) "$PY" -m dnadiff.cli pretrain --no-progress --genome "$GENOME" \
    --out "$OUT/pretrain" "${PRE_ARGS[@]}"
CKPT="$OUT/pretrain/model.pt"

# ---- fine-tuning: one run on a seeded 90/10 split of the bundled enhancer table --------------------------------
"$PY" - "$ENHANCERS" "$OUT" <<'PYEOF'
import random, sys
lines = open(sys.argv[1]).read().splitlines()
header, rows = lines[0], lines[1:]
random.Random(0).shuffle(rows)
cut = int(0.9 * len(rows))
open(f"{sys.argv[2]}/enhancers_train.tsv", "w").write("\n".join([header, *rows[:cut]]) + "\n")
open(f"{sys.argv[2]}/enhancers_test.tsv", "w").write("\n".join([header, *rows[cut:]]) + "\n")
PYEOF
FT_DEV=()
if has_option finetune --accelerator; then FT_DEV=(--accelerator "$ACC"); elif has_option finetune --device; then FT_DEV=(--device "$DEV"); fi
echo "${FT_DEV[*]:-none: finetune has no device option on this checkout, it ran on the CPU}" > "$OUT/finetune_device.txt"
FT_SIZE=()
[ "$DRY_RUN" = 1 ] && FT_SIZE=(--max-examples 64)
run_step finetune 150 "$PY" -m dnadiff.cli finetune --task human_enhancers --data "$OUT/enhancers_train.tsv" \
    --test-data "$OUT/enhancers_test.tsv" --checkpoint "$CKPT" --protocol caduceus --folds 1 --max-epochs 1 \
    --no-baselines --out "$OUT/finetune" ${FT_DEV[@]+"${FT_DEV[@]}"} ${FT_SIZE[@]+"${FT_SIZE[@]}"}

# ---- sampling speed --------------------------------------------------------------------------------------------
SAMPLE_DEV=()
if has_option sample --accelerator; then SAMPLE_DEV=(--accelerator "$ACC"); elif has_option sample "--device "; then SAMPLE_DEV=(--device "$DEV"); fi
if [ "$DRY_RUN" = 1 ]; then
    run_step sample_bench 90 "$PY" benchmarks/sample.py --checkpoint "$CKPT" --num 2 --lengths 64
    run_step sample_cli 90 "$PY" -m dnadiff.cli sample --checkpoint "$CKPT" --num 2 --length 64 --steps 8 \
        --out "$OUT/samples.fa" ${SAMPLE_DEV[@]+"${SAMPLE_DEV[@]}"}
else
    run_step sample_bench 120 "$PY" benchmarks/sample.py --checkpoint "$CKPT" --num 32 --lengths 1024
    run_step sample_cli 90 "$PY" -m dnadiff.cli sample --checkpoint "$CKPT" --num 64 --length 1024 --steps 256 \
        --batch-size 64 --out "$OUT/samples.fa" ${SAMPLE_DEV[@]+"${SAMPLE_DEV[@]}"}
fi

# ---- long context (issue 24): peak memory and tokens/s at 1k, 16k, 131k (1M inference), with and without
# activation checkpointing, benchmarks/long_context.py --device cuda; last, so it never starves the steps above
if [ "$DRY_RUN" = 1 ]; then
    run_step long_context 120 "$PY" benchmarks/long_context.py --models 470k --windows 1024 --infer-windows 2048 \
        --budget-s 100 --row-limit-s 60
else
    run_step long_context 180 "$PY" benchmarks/long_context.py --device cuda --windows 1024,16384,131072 \
        --infer-windows 131072,1048576 --budget-s 160 --row-limit-s 60 --repeats 1
fi

# ---- one JSON line -----------------------------------------------------------------------------------------------
"$PY" - "$OUT" "$DRY_RUN" "$START" <<'PYEOF'
import csv, json, re, sys, time
import xml.etree.ElementTree as ET
from pathlib import Path

out, dry, start = Path(sys.argv[1]), sys.argv[2] == "1", float(sys.argv[3])


def last_json(name):
    try:
        lines = [l for l in (out / f"{name}.log").read_text().splitlines() if l.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def status(rc):
    return {"0": "ok", "124": "timeout", "137": "timeout", "skipped": "skipped"}.get(rc, "failed")


steps = {r["step"]: {"status": status(r["rc"]), "rc": r["rc"], "seconds": float(r["seconds"])}
         for r in csv.DictReader(open(out / "steps.tsv"), delimiter="\t")}
result = {"gpu_check": "dnadiff", "dry_run": dry, "seconds": round(time.time() - start, 1), "steps": steps}
try:
    result["env"] = json.loads((out / "env.json").read_text())
except (OSError, ValueError):
    result["env"] = None
try:
    log = (out / "install.log").read_text()
    result["missing_modules"] = json.loads(re.findall(r"^MISSING_MODULES=(.*)$", log, re.M)[-1])
except (OSError, IndexError, ValueError):
    result["missing_modules"] = None
try:
    root = ET.parse(out / "pytest_gpu.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = suite.findall("testcase")
    failed = [c.get("classname", "") + "::" + c.get("name", "") for c in cases
              if c.find("failure") is not None or c.find("error") is not None]
    skipped = [c.get("name", "") for c in cases if c.find("skipped") is not None]
    result["pytest_gpu"] = {"tests": len(cases), "failed": failed, "skipped": len(skipped),
                            "passed": len(cases) - len(failed) - len(skipped)}
except (OSError, ET.ParseError, AttributeError):
    result["pytest_gpu"] = None
backbone = {}
for name in ("backbone_470k", "backbone_7m"):
    backbone.update({k: v for k, v in (last_json(name) or {}).items() if k not in backbone})
result["backbone"] = backbone or None
targets = {}
for key, row in backbone.items():
    m = re.match(r"cuda_470k_ph_L1024_b\d+_triton$", key)
    if m and isinstance(row, dict) and "train_speedup_vs_pure" in row:
        targets["triton_train_speedup_vs_pure_470k_1k"] = row["train_speedup_vs_pure"]
        targets["target_10x_pure_met"] = row["train_speedup_vs_pure"] >= 10
    if key == "cuda_470k_ph_L1024_triton_over_mamba_train_time":
        targets["triton_over_mamba_train_time_470k_1k"] = row
        targets["target_within_1.5x_mamba_met"] = row <= 1.5
result["targets"] = targets or None
try:
    summary = json.loads((out / "pretrain" / "summary.json").read_text())
    result["pretrain"] = {k: summary.get(k) for k in ("steps", "seconds", "train/tokens_per_s", "val/bits_per_token",
                                                       "parameters")}
except (OSError, ValueError):
    result["pretrain"] = None
try:
    ft = json.loads((out / "finetune" / "results.json").read_text())
    folds = ft.get("folds") or []
    result["finetune"] = {"seconds": steps.get("finetune", {}).get("seconds"),
                          "accuracy": folds[0].get("accuracy") if folds else None,
                          "mcc": folds[0].get("mcc") if folds else None,
                          "device_options": (out / "finetune_device.txt").read_text().strip()}
except (OSError, ValueError, AttributeError):
    result["finetune"] = None
result["sample_bench"] = last_json("sample_bench")
result["long_context"] = last_json("long_context")
try:
    text = (out / "samples.fa").read_text()
    n = text.count(">")
    secs = steps.get("sample_cli", {}).get("seconds")
    result["sample_cli"] = {"sequences": n, "seconds_incl_startup": secs,
                            "sequences_per_s_incl_startup": round(n / secs, 3) if n and secs else None}
except OSError:
    result["sample_cli"] = None
line = json.dumps(result, separators=(",", ":"))
(out / "gpu_check.json").write_text(line + "\n")
print(line)
PYEOF
