"""The pictures: curves.png from a run's metrics log, the per-fold plot, the report figure; each a readable PNG
with content, the data read exactly; without matplotlib one line and no file."""
from __future__ import annotations

import sys

import pytest

from dnadiff import plots

CSV = """epoch,lr,step,train/bits_per_token,train/loss,val/bits_per_token
0,0.001,9,2.10,1.45,
0,,9,,,2.20
0,0.001,19,1.95,1.35,
0,,19,,,1.99
"""


def _image(path):
    import matplotlib.image as mpimg

    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 300
    assert pixels[..., :3].std() > 0.05  # not a blank canvas
    return pixels


def test_curves_png_from_the_metrics_log(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.csv").write_text(CSV)
    assert plots.read_curves(tmp_path / "logs" / "metrics.csv") == {"train": [(9, 2.10), (19, 1.95)],
                                                                    "val": [(9, 2.20), (19, 1.99)]}
    path = plots.pretrain_curves(tmp_path, markov_bits=1.93, markov_order=5)
    assert path == tmp_path / "curves.png"
    _image(path)


def test_fold_plot_and_report_figure(tmp_path):
    pytest.importorskip("matplotlib")
    fold = lambda k, a: {"fold": k, "accuracy": a, "auroc": a + 0.05}  # noqa: E731
    results = {"task": "human_enhancers_cohn", "protocol": "cv", "selection": "inner", "num_classes": 2,
               "folds": [fold(0, 0.7), fold(1, 0.72)],
               "baselines": {"kmer_logreg": {"folds": [fold(0, 0.65), fold(1, 0.66)]},
                             "cnn": {"folds": [fold(0, 0.6), fold(1, 0.62)]}}}
    _image(plots.finetune_plot(results, tmp_path))
    metrics = {"kmer3_pearson": 0.98, "kmer3_pearson_ci": [0.97, 0.99], "kmer3_pearson_floor": 0.99,
               "kmer3_pearson_floor_ci": [0.98, 0.995], "frechet": 0.3, "frechet_ci": [0.2, 0.4],
               "frechet_floor": 0.05, "frechet_floor_ci": [0.02, 0.08], "interval_method": "test"}
    _image(plots.report_plot(metrics, tmp_path / "r.png"))
    assert plots.report_plot({"gc_mean_generated": 0.4}, tmp_path / "none.png") is None  # no field figure


def test_without_matplotlib_one_line_and_no_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.csv").write_text(CSV)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert plots.pretrain_curves(tmp_path) is None and not (tmp_path / "curves.png").exists()
    assert capsys.readouterr().err.strip() == plots.NO_MATPLOTLIB
