"""The benchmark scripts run, at a tiny size. (Timings are written up in docs/benchmarks.md, never asserted.)"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from minidl.losses import CrossEntropy
from minidl.optimizers import SGD
from minidl.utils import atomic_path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

pytestmark = pytest.mark.slow


def test_training_benchmark_reports_every_framework_phase_and_layer(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import bench_training

    atomic_paths = []

    def recorded(path):
        atomic_paths.append(str(path))
        return atomic_path(path)

    monkeypatch.setattr(bench_training, "atomic_path", recorded)
    results = bench_training.main(["--sizes", "16", "--repeats", "1", "--layer-size", "16", "--settle", "0",
                                   "--json", str(tmp_path / "run.json")])
    assert json.loads((tmp_path / "run.json").read_text()) == results
    assert atomic_paths == [str(tmp_path / "run.json")]  # written through a temporary file and a rename
    assert [path.name for path in tmp_path.iterdir()] == ["run.json"]
    rows = {(r["size"], r["phase"]): r for r in results["networks"]}
    assert set(rows) == {(16, "train"), (16, "inference")}
    for row in rows.values():
        assert all(row[k] > 0 for k in ("minidl", "torch", "torch_channels_last"))
    names = [r["layer"].split()[0] for r in results["layers"]]
    assert names[:3] == ["conv2d_1", "relu_1", "maxpool2d_1"] and "dense_2" in names
    assert all(r["minidl_forward_ms"] >= 0 and r["torch_forward_ms"] >= 0 for r in results["layers"])


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCHW", "channels_last"])
def test_pytorch_runs_the_same_network_with_the_same_weights(channels_last):
    # Else the timings would compare different work. (tests/test_model_gradients.py follows
    # the NCHW copy step for step in training; this checks both memory formats' outputs and gradients.)
    torch = pytest.importorskip("torch")
    import common
    from torch_reference import weights_of

    model = common.minidl_model(24)
    x, y = common.batch(24, 4)
    net = common.torch_model(model, channels_last).eval()
    copied = weights_of(net, flattened=(3, 3, 128))  # the feature map Flatten sees at 24 px
    assert len(copied) == len(model.get_weights())
    for ours, theirs in zip(model.get_weights(), copied):
        np.testing.assert_array_equal(ours, theirs)
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    if channels_last:
        tx = tx.contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(torch.softmax(net(tx), 1).detach().numpy(), model.predict(x), rtol=1e-5, atol=1e-6)
    torch.nn.functional.cross_entropy(net(tx), torch.from_numpy(y)).backward()
    model.layers[-3].rate = 0.0  # the Dropout: train_on_batch runs it in training mode, eval() does not
    before = model.get_weights()
    model.compile(SGD(1.0), CrossEntropy())
    model.train_on_batch(x, y)
    steps = [b - a for a, b in zip(model.get_weights(), before)]  # SGD(1): the step is the gradient
    for parameter in net.parameters():
        parameter.data = parameter.grad  # weights_of reads .weight: lay the gradients out as minidl's weights
    grads = weights_of(net, flattened=(3, 3, 128))
    assert len(grads) == len(steps)
    for step, grad in zip(steps, grads):
        np.testing.assert_allclose(step, grad, rtol=1e-4, atol=1e-6)


def test_peak_memory_is_measured_in_a_fresh_process():
    pytest.importorskip("torch")
    import bench_training

    for framework in ("minidl", "torch", "torch_channels_last"):
        assert bench_training.peak_memory_mb(framework, 16, 4, 1) > 0


def test_pipeline_benchmark_builds_the_cache_and_feeds_batches(tmp_path):
    import bench_pipeline

    results = bench_pipeline.main(["--patients", "3", "--size", "16", "--min-size", "48", "--epochs", "1",
                                   "--workers", "1", "--dir", str(tmp_path), "--train"])
    assert results["images"] > 0
    assert results["build_images_per_s"] > 0 and results["batch_images_per_s"] > 0
    assert results["epoch_images_per_s"] > 0 and results["fixed_batch_images_per_s"] > 0


def test_the_benchmark_figure_draws_the_ratios_layers_and_memory_of_a_run(tmp_path):
    pytest.importorskip("matplotlib")
    import plot_benchmark

    results = {
        "device": "numpy", "tf32": False, "batch_size": 32, "repeats": 7,
        "networks": [{"size": 64, "phase": "train", "minidl": 300.0, "torch": 200.0, "torch_channels_last": 150.0},
                     {"size": 64, "phase": "inference", "minidl": 50.0, "torch": 100.0, "torch_channels_last": 40.0}],
        "layers": [{"layer": "conv2d_1 (64, 64, 1)", "minidl_forward_ms": 3.0, "minidl_backward_ms": 5.0,
                    "torch_forward_ms": 2.0, "torch_backward_ms": 4.0}],
        "memory": [{"size": 64, "minidl": 150.0, "torch": 200.0, "torch_channels_last": 190.0}],
    }
    path = tmp_path / "cpu.png"
    figure = plot_benchmark.draw(results, str(path))
    assert path.read_bytes().startswith(b"\x89PNG")
    ratios, layers, memory = figure.axes
    assert [bar.get_height() for bar in ratios.patches] == pytest.approx([1.5, 0.5, 2.0, 1.25])
    # Forward bars start at 0, backward ones where the forward ends: minidl's, then PyTorch's.
    assert [(bar.get_x(), bar.get_width()) for bar in layers.patches] == [(0, 3.0), (3.0, 5.0), (0, 2.0), (2.0, 4.0)]
    assert [bar.get_height() for bar in memory.patches] == [150.0, 200.0, 190.0]
    gpu = {**results, "device": "cupy", "memory": [], "layers": [],
           "networks": [{**row, "torch_fp32": 100.0} for row in results["networks"]]}
    (only,) = plot_benchmark.draw(gpu, str(tmp_path / "gpu.svg")).axes
    assert [bar.get_height() for bar in only.patches] == pytest.approx([1.5, 0.5, 3.0, 0.5])
    assert "PyTorch float32" in " ".join(text.get_text() for text in only.get_legend().get_texts())
