"""PyTorch as an oracle for minidl's layers: layout conversions and reference computations.

minidl is channels-last (NHWC) with kernels ``(kh, kw, C, F)``; PyTorch is
channels-first (NCHW) with kernels ``(F, C, kh, kw)``. Each ``torch_*`` function
here takes and returns minidl layouts (NumPy arrays), does the computation in
PyTorch with autograd, and returns the output and the gradients for a given
upstream gradient ``dy``.

Import this module only after ``pytest.importorskip("torch")``.
"""
import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

#: Tolerances for comparing minidl with PyTorch. The two sum the same terms in a
#: different order: the difference is a few units of rounding per term summed
#: (at most 5*5*3 = 75 terms here, values of order 1).
TOLERANCE = {
    np.dtype(np.float32): {"rtol": 1e-5, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-11, "atol": 1e-12},
}


def tolerance(dtype):
    return TOLERANCE[np.dtype(dtype)]


# ------------------------------------------------------------------- layouts
def nhwc_to_nchw(a):
    return np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2))


def nchw_to_nhwc(a):
    return np.ascontiguousarray(np.asarray(a).transpose(0, 2, 3, 1))


def kernel_to_torch(w):
    """minidl kernel ``(kh, kw, C, F)`` -> PyTorch weight ``(F, C, kh, kw)``."""
    return np.ascontiguousarray(np.asarray(w).transpose(3, 2, 0, 1))


def kernel_from_torch(w):
    """PyTorch weight ``(F, C, kh, kw)`` -> minidl kernel ``(kh, kw, C, F)``."""
    return np.ascontiguousarray(np.asarray(w).transpose(2, 3, 1, 0))


def leaf(a):
    """A PyTorch leaf tensor with the same values and dtype as ``a`` that records its gradient."""
    return torch.tensor(np.asarray(a)).requires_grad_(True)


def grad_of(t):
    return t.grad.detach().numpy()


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# ------------------------------------------------------------------- padding
def keras_same_padding(size, kernel, stride):
    """``(before, after)`` zeros that TensorFlow/Keras pad along one axis for ``"same"``.

    Written from TensorFlow's documentation of "SAME" padding, independently of
    minidl: ``out = ceil(size / stride)``, ``total = max((out - 1) * stride + kernel - size, 0)``,
    ``before = total // 2`` and the odd pixel, if any, after.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@contextlib.contextmanager
def without_onednn():
    """Use PyTorch's plain CPU convolution, not its oneDNN (mkldnn) one.

    With torch 2.11 on an AVX-512 machine, oneDNN returned values like 4e31 for a
    float32 1x2 kernel with stride (1, 2) on a (3, 1, 7, 3) input, where minidl, the
    direct sum and PyTorch without oneDNN agreed (a known kind of oneDNN bug, e.g.
    pytorch/pytorch#84488, whose workaround is this). An oracle must be the plain path.
    """
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


# ---------------------------------------------------------------- references
def torch_dense(x, w, b, dy):
    xt, wt, bt = leaf(x), leaf(w), leaf(b)
    y = F.linear(xt, wt.T, bt)
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), grad_of(xt), {"W": grad_of(wt), "b": grad_of(bt)}


def torch_conv2d(x, w, b, dy, strides, padding):
    """Conv2D in PyTorch: explicit (possibly asymmetric) Keras padding, then a "valid" conv."""
    (kh, kw), (sh, sw) = w.shape[:2], pair(strides)
    xt, wt, bt = leaf(nhwc_to_nchw(x)), leaf(kernel_to_torch(w)), leaf(b)
    if padding == "same":
        top, bottom = keras_same_padding(x.shape[1], kh, sh)
        left, right = keras_same_padding(x.shape[2], kw, sw)
        inp = F.pad(xt, (left, right, top, bottom))  # last axis (W) first
    else:
        inp = xt
    with without_onednn():
        y = F.conv2d(inp, wt, bt, stride=(sh, sw))
        y.backward(torch.tensor(nhwc_to_nchw(dy)))
    grads = {"W": kernel_from_torch(grad_of(wt)), "b": grad_of(bt)}
    return nchw_to_nhwc(y.detach().numpy()), nchw_to_nhwc(grad_of(xt)), grads


def torch_pool2d(kind, x, dy, pool_size, strides):
    """``kind`` "max" or "avg": F.max_pool2d / F.avg_pool2d, no padding, floor mode."""
    pool = pair(pool_size)
    strides = pool if strides is None else pair(strides)
    xt = leaf(nhwc_to_nchw(x))
    fn = F.max_pool2d if kind == "max" else F.avg_pool2d
    y = fn(xt, kernel_size=pool, stride=strides, padding=0, ceil_mode=False)
    y.backward(torch.tensor(nhwc_to_nchw(dy)))
    return nchw_to_nhwc(y.detach().numpy()), nchw_to_nhwc(grad_of(xt))


def torch_elementwise(fn, x, dy):
    """Any shape-preserving (or reshaping) function ``fn`` of one tensor, e.g. a ReLU."""
    xt = leaf(x)
    y = fn(xt)
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), grad_of(xt)


def torch_cross_entropy(y_pred, y_true, *, from_logits, class_weight=None, sample_weight=None):
    """Mean cross-entropy and its gradient for ``y_pred`` (logits or probabilities).

    ``y_true``: class indices (N,) or target rows (N, K). With ``class_weight``
    (one weight per class) the loss is Keras's ``mean_n(w_n * L_n)``:
    PyTorch's per-sample losses (``reduction="none"``) weighted, then averaged
    over N, not renormalised, where a row's weight is ``w_n = sum_j y_nj
    class_weight[j]`` (its class's weight for a one-hot row, minidl's mix for
    others); ``sample_weight`` (N,) multiplies in the same way.
    """
    pt = leaf(y_pred)
    y_true = np.asarray(y_true)
    if y_true.ndim == 1:
        rows = np.eye(y_pred.shape[1])[y_true]
        target = torch.tensor(y_true.astype(np.int64))
    else:
        rows = y_true
        target = torch.tensor(y_true.astype(y_pred.dtype))  # class probabilities, or any rows
    if from_logits:
        per_sample = F.cross_entropy(pt, target, reduction="none")
    elif y_true.ndim == 1:
        per_sample = F.nll_loss(torch.log(pt), target, reduction="none")
    else:
        per_sample = -(target * torch.log(pt)).sum(dim=1)
    if class_weight is not None:
        weights = torch.tensor((rows @ np.asarray(class_weight)).astype(y_pred.dtype))
        per_sample = weights * per_sample
    if sample_weight is not None:
        per_sample = torch.tensor(np.asarray(sample_weight, dtype=y_pred.dtype)) * per_sample
    loss = per_sample.mean()
    loss.backward()
    return loss.detach().item(), grad_of(pt)


# ------------------------------------------------------------- whole models
def weights_of(net, flattened=None):
    """The weights of a PyTorch network of Conv2d and Linear modules, in minidl's layouts and order.

    ``flattened``: the (H, W, C) feature map that ``nn.Flatten`` turned into
    the first Linear's input, in PyTorch's (C, H, W) order: that Linear's
    weight rows are put back in minidl's (H, W, C) order.
    """
    out = []
    for module in net.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            w = module.weight.detach().numpy()
            if w.ndim == 4:
                out.append(kernel_from_torch(w))
            else:
                w = w.T
                if flattened is not None:
                    h, wd, c = flattened
                    w, flattened = w.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(w.shape), None
                out.append(np.ascontiguousarray(w))
            out.append(module.bias.detach().numpy().copy())
    return out
