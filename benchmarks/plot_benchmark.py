"""Draw the results of ``bench_training.py --json`` as one figure: where minidl stands against PyTorch.

Run from the repository root:

    python3 benchmarks/bench_training.py --memory --json cpu.json
    python3 benchmarks/plot_benchmark.py cpu.json cpu.png

Panels, left to right:

- the ratio of minidl's time to PyTorch's (default NCHW, and ``channels_last``
  or, on the GPU, float32) for a training step and for inference at each
  image size, with parity marked (below it, minidl is faster);
- each layer alone, forward and backward stacked, minidl above PyTorch
  (where the time goes);
- peak memory of a training step per size, when the run measured it.

The file's suffix picks the format (``.png``, ``.svg``, ``.pdf``).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minidl.plots import save_figure  # noqa: E402

MINIDL, TORCH, TORCH_OTHER = "tab:blue", "tab:orange", "tab:green"


def other_torch(results):
    """The second PyTorch column: ``(key, label)``, float32 on the GPU, channels_last on the CPU."""
    if results["device"] == "cupy":
        return "torch_fp32", "PyTorch float32 (TF32 off)"
    return "torch_channels_last", "PyTorch channels_last"


def draw(results, path):
    """Write the figure of ``results`` (the dict ``bench_training.run`` returns) to ``path``; return the Figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 1 + bool(results.get("layers")) + bool(results.get("memory"))
    figure = Figure(figsize=(6 * panels, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = iter(figure.subplots(1, panels, squeeze=False)[0])
    device = "GPU (CuPy)" if results["device"] == "cupy" else "CPU (NumPy)"
    figure.suptitle(f"minidl against PyTorch on the reference MURA CNN, batch {results['batch_size']}, {device}"
                    + (", TF32" if results.get("tf32") else ""))
    _ratios(next(axes), results)
    if results.get("layers"):
        _layers(next(axes), results["layers"])
    if results.get("memory"):
        _memory(next(axes), results)
    save_figure(figure, path, "plot_benchmark")
    return figure


def _ratios(axes, results):
    key, label = other_torch(results)
    rows = results["networks"]
    names = [f"{row['size']} px\n{row['phase']}" for row in rows]
    positions = range(len(rows))
    width = 0.38
    highest = 1.0
    for offset, column, name, color in ((-width / 2, "torch", "PyTorch (default)", TORCH),
                                        (width / 2, key, label, TORCH_OTHER)):
        ratios = [row["minidl"] / row[column] for row in rows]
        highest = max(highest, *ratios)
        bars = axes.bar([p + offset for p in positions], ratios, width, label=f"minidl / {name}", color=color)
        axes.bar_label(bars, fmt="%.2f", fontsize=8)
    axes.axhline(1.0, color="black", linewidth=1, linestyle="--", label="parity")
    axes.set_ylim(0, 1.35 * highest)  # room above the bars for the legend
    axes.set_xticks(list(positions), names)
    axes.set_ylabel("minidl's time / PyTorch's (lower is better)")
    axes.set_title(f"Whole network, median of {results['repeats']}")
    axes.legend(fontsize=8, loc="upper left", ncols=2)


def _layers(axes, rows):
    names = [row["layer"] for row in rows][::-1]  # the first layer at the top
    rows = rows[::-1]
    positions = range(len(rows))
    height = 0.38
    for offset, framework, color in ((height / 2, "minidl", MINIDL), (-height / 2, "torch", TORCH)):
        forward = [row[f"{framework}_forward_ms"] for row in rows]
        backward = [row[f"{framework}_backward_ms"] for row in rows]
        where = [p + offset for p in positions]
        axes.barh(where, forward, height, color=color, label=f"{framework} forward")
        axes.barh(where, backward, height, left=forward, color=color, alpha=0.45, label=f"{framework} backward")
    axes.set_yticks(list(positions), names, fontsize=7)
    axes.set_xlabel("ms")
    axes.set_title("Each layer alone (input shape per sample)")
    axes.legend(fontsize=8)


def _memory(axes, results):
    rows = results["memory"]
    positions = range(len(rows))
    width = 0.27
    for offset, column, name, color in ((-width, "minidl", "minidl", MINIDL), (0.0, "torch", "PyTorch", TORCH),
                                        (width, "torch_channels_last", "PyTorch channels_last", TORCH_OTHER)):
        bars = axes.bar([p + offset for p in positions], [row[column] for row in rows], width, label=name,
                        color=color)
        axes.bar_label(bars, fmt="%.0f", fontsize=8)
    axes.set_xticks(list(positions), [f"{row['size']} px" for row in rows])
    axes.set_ylabel("MB above the process with its model built")
    axes.set_title("Peak memory of a training step")
    axes.legend(fontsize=8)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="the JSON file of bench_training.py --json")
    parser.add_argument("figure", help="the image to write (.png, .svg, .pdf)")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        results = json.load(f)
    draw(results, args.figure)
    print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
