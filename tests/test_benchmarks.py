"""The benchmark scripts run, at a tiny size. (Timings are written up in docs/benchmarks.md, never asserted.)"""
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

pytestmark = pytest.mark.slow


def test_training_benchmark_reports_every_framework_phase_and_layer():
    pytest.importorskip("torch")
    import bench_training

    results = bench_training.main(["--sizes", "16", "--repeats", "1", "--layer-size", "16", "--settle", "0"])
    rows = {(r["size"], r["phase"]): r for r in results["networks"]}
    assert set(rows) == {(16, "train"), (16, "inference")}
    for row in rows.values():
        assert all(row[k] > 0 for k in ("minidl", "torch", "torch_channels_last"))
    names = [r["layer"].split()[0] for r in results["layers"]]
    assert names[:3] == ["conv2d_1", "relu_1", "maxpool2d_1"] and "dense_2" in names
    assert all(r["minidl_forward_ms"] >= 0 and r["torch_forward_ms"] >= 0 for r in results["layers"])


def test_peak_memory_is_measured_in_a_fresh_process():
    pytest.importorskip("torch")
    import bench_training

    for framework in ("minidl", "torch"):
        assert bench_training.peak_memory_mb(framework, 16, 4, 1) > 0


def test_pipeline_benchmark_builds_the_cache_and_feeds_batches(tmp_path):
    import bench_pipeline

    results = bench_pipeline.main(["--patients", "3", "--size", "16", "--min-size", "48", "--epochs", "1",
                                   "--workers", "1", "--dir", str(tmp_path), "--train"])
    assert results["images"] > 0
    assert results["build_images_per_s"] > 0 and results["batch_images_per_s"] > 0
    assert results["epoch_images_per_s"] > 0 and results["fixed_batch_images_per_s"] > 0
