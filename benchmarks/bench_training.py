"""minidl against PyTorch on the reference MURA CNN: training step, inference, layers, memory.

Run from the repository root:

    python3 benchmarks/bench_training.py                      # CPU, 64/128/224 px, batch 32
    python3 benchmarks/bench_training.py --device cupy        # GPU: minidl on CuPy vs PyTorch CUDA
    python3 benchmarks/bench_training.py --sizes 16 --repeats 2 --no-layers   # a quick check

Both frameworks run in this one process, on the same batches, interleaved
(minidl, PyTorch NCHW, PyTorch channels_last, in an order that rotates from
one repetition to the next), each timed call on the CPU starting after the
other framework's threads have gone idle (``common.SETTLE_S``), and the report
gives medians and ratios. Peak memory of a training step is measured in a
fresh subprocess per framework (``--memory``): Linux's peak resident size
(VmHWM, reset through /proc/self/clear_refs once the model and its batch are
made, after a tiny warm-up step) minus the resident size at that moment.
"""
import argparse
import json
import os
import platform
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import minidl  # noqa: E402
from minidl.backend import backend_module  # noqa: E402
from minidl.utils import atomic_path  # noqa: E402


def _sync_for(device):
    if device == "cupy":
        import cupy
        import torch

        def sync():
            cupy.cuda.Device().synchronize()
            torch.cuda.synchronize()

        return sync
    return None


def time_network(size, batch_size, repeats, device, settle=common.SETTLE_S, channels_last_too=True):
    """Median milliseconds per training step and per inference batch, for each framework."""
    import torch

    torch_device = "cuda" if device == "cupy" else "cpu"
    xp = backend_module()
    model = common.minidl_model(size)
    x, y = common.batch(size, batch_size)
    variants = {"torch": common.torch_model(model, False, torch_device)}
    if channels_last_too:
        variants["torch_channels_last"] = common.torch_model(model, True, torch_device)
    if device == "cupy":
        # PyTorch's default lets cuDNN run float32 convolutions in TF32; this variant
        # turns that off, for exact float32 arithmetic like minidl's default.
        variants["torch_fp32"] = common.torch_model(model, False, torch_device)
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(torch_device)
    ty = torch.from_numpy(y).to(torch_device)
    inputs = {"torch": tx, "torch_fp32": tx, "torch_channels_last": tx.contiguous(memory_format=torch.channels_last)}
    optimisers = {name: torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7) for name, net in variants.items()}
    loss_fn = torch.nn.CrossEntropyLoss()
    xd, yd = xp.asarray(x), xp.asarray(y)
    sync = _sync_for(device)

    def minidl_step():
        model.train_on_batch(xd, yd)

    def minidl_infer():  # as a user runs it: no layer keeps what a backward pass would need
        model.predict(xd, batch_size=len(xd))

    def torch_net(name):
        torch.backends.cudnn.allow_tf32 = name != "torch_fp32"  # PyTorch's default is True
        return variants[name]

    def torch_step(name):
        net, opt = torch_net(name), optimisers[name]
        net.train()
        opt.zero_grad(set_to_none=True)
        loss_fn(net(inputs[name]), ty).backward()
        opt.step()

    def torch_infer(name):
        net = torch_net(name)
        net.eval()
        with torch.no_grad():
            net(inputs[name])

    steps = {"minidl": minidl_step, **{name: (lambda n=name: torch_step(n)) for name in variants}}
    infers = {"minidl": minidl_infer, **{name: (lambda n=name: torch_infer(n)) for name in variants}}
    for fn in list(steps.values()) + list(infers.values()):  # warm-up: allocations, kernel caches
        fn()
    train = {name: [] for name in steps}
    infer = {name: [] for name in infers}
    for repetition in range(repeats):
        for name in common.rotated(list(steps), repetition):
            train[name].append(common.timed(steps[name], sync, settle))
        for name in common.rotated(list(infers), repetition):
            infer[name].append(common.timed(infers[name], sync, settle))
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default again
    return ({k: common.median_ms(v) for k, v in train.items()},
            {k: common.median_ms(v) for k, v in infer.items()})


def time_layers(size, batch_size, repeats, device, settle=common.SETTLE_S):
    """Median forward and backward milliseconds of each layer alone, at the shapes it sees in the network.

    The minidl layers reuse the arrays they keep across steps (masks,
    gradients), as they do in the network (``in_model``); each timed call
    follows a warm-up call.
    """
    import torch

    torch_device = "cuda" if device == "cupy" else "cpu"
    xp = backend_module()
    model = common.minidl_model(size)
    x, _ = common.batch(size, batch_size)
    net = common.torch_model(model, False, torch_device)
    torch_modules = list(net)
    sync = _sync_for(device)
    rows = []
    activation = xp.asarray(x)
    t_activation = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(torch_device)
    module_index = 0
    for layer in model.layers:
        layer.in_model = True  # as while the model runs it: masks and gradients written into kept arrays
    for index, layer in enumerate(model.layers):
        out = layer.forward(activation, training=True)
        dy = xp.ones_like(out)
        layer_name = f"{layer.name} {tuple(activation.shape[1:])}"
        if type(layer).__name__ in ("Softmax",):
            activation = out
            continue
        module = torch_modules[module_index]
        module_index += 1
        t_in = t_activation.detach().requires_grad_(index > 0)
        t_out = module(t_in)
        t_dy = torch.ones_like(t_out)
        wrt = [t_in] * (index > 0) + list(module.parameters())

        def torch_forward_backward():  # returns the gradients rather than adding them into .grad, as minidl's do
            torch.autograd.grad(module(t_in), wrt, t_dy)

        layer.backward(dy)
        torch_forward_backward()  # warm-up (minidl's forward ran above)
        fwd, bwd, t_fwd, t_bwd = [], [], [], []
        for _ in range(repeats):
            fwd.append(common.timed(lambda: layer.forward(activation, training=True), sync, settle))
            bwd.append(common.timed(lambda: layer.backward(dy), sync, settle))
            t_fwd.append(common.timed(lambda: module(t_in), sync, settle))
            t_bwd.append(common.timed(torch_forward_backward, sync, settle) - t_fwd[-1])
        rows.append({
            "layer": layer_name,
            "minidl_forward_ms": common.median_ms(fwd), "minidl_backward_ms": common.median_ms(bwd),
            "torch_forward_ms": common.median_ms(t_fwd), "torch_backward_ms": max(common.median_ms(t_bwd), 0.0),
        })
        activation = out.copy()  # the next layer's input; out is a kept array that the timed calls rewrite
        t_activation = t_out.detach()
    return rows


MEMORY_SCRIPT = r"""
import sys, json
sys.path.insert(0, {bench_dir!r}); sys.path.insert(0, {repo!r})
import numpy as np, torch
from threadpoolctl import threadpool_limits
torch.set_num_threads({threads})
threadpool_limits({threads}, user_api="blas")
import common
channels_last = {framework!r} == "torch_channels_last"
def steps(size, n, count):  # count steps of a fresh model, made with its batch before the yield
    x, y = common.batch(size, n)
    if {framework!r} == "minidl":
        model = common.minidl_model(size)
        step = lambda: model.train_on_batch(x, y)
    else:
        tx, ty = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y)
        if channels_last:
            tx = tx.contiguous(memory_format=torch.channels_last)
        net = common.torch_model(common.minidl_model(size), channels_last)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
        def step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(tx), ty).backward()
            opt.step()
    yield
    for _ in range(count):
        step()
def status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
for _ in steps(16, 2, 1):  # a tiny step first: each framework's one-time set-up is not a step's memory
    pass
measured = steps({size}, {batch}, 3)
next(measured)  # the model and the batch
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
before = status_mb("VmRSS")
for _ in measured:
    pass
print(json.dumps({{"peak_mb": status_mb("VmHWM") - before}}))
"""


def peak_memory_mb(framework, size, batch_size, threads):
    """Peak resident-memory growth (MB) over 3 training steps of a fresh model, in a fresh process.

    Counted from the model and its batch made: what a step adds (activations,
    gradients, the optimiser's state, workspaces). The process first trains
    a tiny model one step, so that what each framework sets up once (thread
    pools, kernels, code pages) is not counted either.
    """
    script = MEMORY_SCRIPT.format(
        bench_dir=os.path.dirname(os.path.abspath(__file__)),
        repo=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."),
        threads=threads, size=size, batch=batch_size, framework=framework,
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def cpu_name():
    """The CPU's model name (from /proc/cpuinfo on Linux, where ``platform.processor()`` is often empty)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device):
    import torch

    lines = [f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}",
             f"numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)"]
    from threadpoolctl import threadpool_info

    for info in threadpool_info():
        if info.get("user_api") == "blas":
            owner = os.path.basename(os.path.dirname(info.get("filepath", ""))).removesuffix(".libs")
            lines.append(f"{owner}'s BLAS: {info.get('internal_api')} {info.get('version')} "
                         f"({info.get('architecture')} kernels, {info.get('num_threads')} threads)")
    if device == "cupy":
        lines.append(minidl.backend.device_name())
    return "; ".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", choices=["numpy", "cupy"], default="numpy")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for both PyTorch and NumPy's BLAS (default: os.cpu_count())")
    parser.add_argument("--layer-size", type=int, default=128, help="image size for the per-layer table")
    parser.add_argument("--no-layers", action="store_true", help="skip the per-layer table")
    parser.add_argument("--memory", action="store_true", help="measure peak memory (CPU only)")
    parser.add_argument("--tf32", action="store_true",
                        help="with --device cupy: let cuBLAS round minidl's float32 matrix products to TF32 "
                             "(CuPy's CUPY_TF32=1), as cuDNN does for PyTorch's convolutions by default")
    parser.add_argument("--settle", type=float, default=common.SETTLE_S,
                        help="seconds of idleness before each timed call on the CPU (default %(default)s), "
                             "so that neither framework's spinning threads slow the other down")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.tf32:
        if args.device != "cupy":
            parser.error("--tf32 needs --device cupy")
        if "cupy" in sys.modules:
            parser.error("--tf32 must be set before CuPy is imported")
        os.environ["CUPY_TF32"] = "1"  # read by CuPy when it is imported

    import torch
    from threadpoolctl import threadpool_limits

    threads = args.threads or os.cpu_count()
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads, user_api="blas"):  # NumPy's BLAS gets the same number
            return run(args, threads)
    finally:
        torch.set_num_threads(torch_threads)


def run(args, threads):
    """The measurements ``main`` asked for, printed and returned as a dict."""
    minidl.set_backend(args.device)
    results = {"machine": machine_description(args.device), "device": args.device, "tf32": args.tf32,
               "batch_size": args.batch_size, "repeats": args.repeats, "networks": [], "layers": []}
    print(results["machine"])
    print(f"\nReference MURA CNN, batch {args.batch_size}, median of {args.repeats} (ms)")
    fp32 = args.device == "cupy"
    print(f"{'size':>5} {'phase':>9} {'minidl':>9} {'torch':>9} {'ratio':>6} {'torch CL':>9} {'ratio':>6}"
          + (f" {'torch fp32':>10} {'ratio':>6}" if fp32 else ""))
    for size in args.sizes:
        train, infer = time_network(size, args.batch_size, args.repeats, args.device, args.settle)
        for phase, t in (("train", train), ("inference", infer)):
            row = {"size": size, "phase": phase, **{k: round(v, 2) for k, v in t.items()}}
            results["networks"].append(row)
            print(f"{size:>5} {phase:>9} {t['minidl']:>9.1f} {t['torch']:>9.1f} {t['minidl'] / t['torch']:>6.2f} "
                  f"{t['torch_channels_last']:>9.1f} {t['minidl'] / t['torch_channels_last']:>6.2f}"
                  + (f" {t['torch_fp32']:>10.1f} {t['minidl'] / t['torch_fp32']:>6.2f}" if fp32 else ""))
    if not args.no_layers:
        print(f"\nEach layer alone at {args.layer_size} px (ms): forward, backward")
        rows = time_layers(args.layer_size, args.batch_size, args.repeats, args.device, args.settle)
        results["layers"] = rows
        for r in rows:
            print(f"{r['layer']:<32} minidl {r['minidl_forward_ms']:7.1f} {r['minidl_backward_ms']:7.1f}"
                  f"   torch {r['torch_forward_ms']:7.1f} {r['torch_backward_ms']:7.1f}")
    if args.memory and args.device != "numpy":
        print("\n--memory measures the peak resident memory of a CPU process: skipped with --device cupy")
    if args.memory and args.device == "numpy":
        print("\nPeak memory of a training step (MB above the process with its model and batch made)")
        results["memory"] = []
        for size in args.sizes:
            row = {"size": size}
            for framework in ("minidl", "torch", "torch_channels_last"):
                row[framework] = round(peak_memory_mb(framework, size, args.batch_size, threads), 1)
            results["memory"].append(row)
            print(f"{size:>5} minidl {row['minidl']:8.1f}  torch {row['torch']:8.1f} "
                  f"(ratio {row['minidl'] / row['torch']:.2f})  torch CL {row['torch_channels_last']:8.1f}")
    if args.json:  # written atomically: a run killed while writing leaves no half a file
        with atomic_path(args.json) as tmp, open(tmp, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
