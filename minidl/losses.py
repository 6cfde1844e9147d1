"""Cross-entropy loss (thesis section 2.3.1) and its gradient (section 2.3.2, corrected).

For one sample with one-hot (or any probability-vector) target ``y`` and
predicted probabilities ``p``::

    L = - sum_j y_j log p_j
    dL/dp_j = - y_j / p_j

When ``p = softmax(z)``, the chain rule through the softmax Jacobian
``dp_j/dz_i = p_j (δ_ij - p_i)`` collapses to

    dL/dz_i = sum_j (-y_j / p_j) p_j (δ_ij - p_i) = -y_i + p_i sum_j y_j = p_i - y_i,

because ``sum_j y_j = 1``. So target rows must sum to 1: a multi-label
row such as ``[1, 1, 0]`` is refused, since for it the middle form is not
``p - y``. minidl computes the middle form, ``p_i sum_j y_j - y_i``: it is
``p - y`` for a row that sums to 1, and the exact gradient of the loss for
one that sums to 1 only up to rounding (accepted within 0.001). The
thesis's section 2.3.2 instead gets ``y_j (1 - p_j)``: it uses only the
diagonal of the Jacobian (``dp_j/dz_j``) and drops a minus sign, so its
gradient is wrong in both sign and the off-diagonal terms.

The loss of a batch is the mean over its ``N`` samples, so every gradient
carries a factor ``1/N``. With ``class_weight``, sample ``n`` is weighted by
``w[class of n]`` and the loss is ``(1/N) sum_n w_n L_n`` (Keras's rule:
the weights are not renormalised). A ``sample_weight`` per sample multiplies
into ``w_n`` the same way (the MURA paper's loss weights each image by the
other class's share of its study type's images, so that the rarer class
weighs more).
"""
import math

from .backend import get_array_module, to_device
from .layers.activations import log_softmax
from .utils import check_flag, finite_float, is_int


class CrossEntropy:
    """Mean categorical cross-entropy over a batch.

    Args:
        from_logits: if True, ``forward`` takes unnormalised scores ``z``
            (N, K) and applies the softmax itself, stably; if False (default)
            it takes probabilities ``p`` (N, K), e.g. from a ``Softmax`` layer.
        class_weight: optional weight per class, a sequence of length K or a
            dict ``{class index: weight}`` (missing classes weigh 1). A target
            row ``y_n`` weighs ``sum_j y_nj w_j``: its class's weight when it is
            one-hot, the mix of its classes' weights when it is soft (Keras
            takes the weight of the row's largest entry instead).

    ``y_true`` is either integer class indices of shape (N,) or target rows
    of shape (N, K): one-hot, or any probability vectors (not negative,
    summing to 1).
    """

    def __init__(self, from_logits=False, class_weight=None):
        self.from_logits = check_flag("CrossEntropy", "from_logits", from_logits)
        self.class_weight = class_weight

    @property
    def class_weight(self):
        """The weights as given, checked: a list of floats, a dict {class index: float}, or None."""
        return self._class_weight

    @class_weight.setter
    def class_weight(self, class_weight):
        self._class_weight = None if class_weight is None else _checked_class_weight(class_weight)

    def forward(self, y_pred, y_true, sample_weight=None):
        """The mean loss of the batch, as a Python float; keeps what ``backward`` needs.

        ``sample_weight``: optional (N,) non-negative weight per sample.
        """
        return float(self.batch_loss(y_pred, y_true, sample_weight=sample_weight))

    def forward_from_logits(self, z, y_true, sample_weight=None):
        """The mean loss for scores ``z`` (N, K); ``backward`` then returns ``dL/dz = w (p - y) / N``.

        ``Sequential`` computes this loss (as ``batch_loss(z, y, logits=True)``)
        from the input of its final ``Softmax`` layer, which keeps it exact and
        finite even where a probability is 0 or 1.
        """
        return float(self.batch_loss(z, y_true, logits=True, sample_weight=sample_weight))

    def batch_loss(self, y_pred, y_true, logits=None, check_labels=True, sample_weight=None):
        """The mean loss as a 0-d array where ``y_pred`` lives (a NumPy scalar on the CPU); keeps what ``backward`` needs.

        ``forward`` is this as a float. On a GPU, reading the value waits for
        every queued kernel, so ``Sequential`` reads it only after queueing the
        backward pass too. ``logits`` overrides ``from_logits`` (True: ``y_pred``
        holds scores ``z``). ``check_labels=False`` skips the checks that need
        values on the host (labels in range, whole, not negative; weights
        finite, not negative; probabilities in [0, 1]): for callers that have
        checked the labels and weights already, as ``Sequential`` does before a
        batch reaches the device. (Its probabilities come from its final
        ``Softmax``; when the last layer is not one, ``compile`` warns and the
        model checks the range itself, reading the answer after the loss.)
        """
        self._grad = None  # a refused call must not leave the last call's gradient for backward
        logits = self.from_logits if logits is None else check_flag("CrossEntropy.batch_loss", "logits", logits)
        check_labels = check_flag("CrossEntropy.batch_loss", "check_labels", check_labels)
        if logits:
            return self._from_logits(y_pred, y_true, check_labels, sample_weight)
        xp = get_array_module(y_pred)
        p = self._check(y_pred, "y_pred")
        if check_labels:
            _check_probabilities(p)
        y, w = self._targets(y_true, p, check_labels, sample_weight)
        # p is clipped below at the dtype's machine epsilon, so a true class
        # predicted with probability exactly 0 gives a large but finite loss.
        # Where y_j = 0 the term y_j log p_j is exactly 0, whatever p_j holds.
        eps = xp.finfo(p.dtype).eps
        p_safe = xp.maximum(p, p.dtype.type(eps))
        log_p = xp.where(y > 0, xp.log(p_safe), 0)
        losses = -(y * log_p).sum(axis=1)
        n = p.shape[0]
        # dL/dp = -w y / (N p); zero where p was clipped (the clip is flat there).
        self._grad = xp.where(p >= eps, -(w[:, None] * y) / (n * p_safe), 0).astype(p.dtype, copy=False)
        return (w * losses).sum() / n

    def _from_logits(self, z, y_true, check_values, sample_weight):
        """``batch_loss`` for scores ``z`` (N, K): ``L = -sum_j y_j log softmax(z)_j``, ``dL/dz = w (p - y) / N``."""
        xp = get_array_module(z)
        z = self._check(z, "logits")
        if check_values:
            _check_finite_logits(z)
        y, w = self._targets(y_true, z, check_values, sample_weight)
        log_p = log_softmax(z)
        losses = -xp.where(y > 0, y * log_p, 0).sum(axis=1)
        n = z.shape[0]
        p = xp.exp(log_p)
        # p sum_j y_j - y, the exact gradient of the loss above: p - y when the rows sum to 1.
        self._grad = (w[:, None] * (p * y.sum(axis=1, keepdims=True) - y) / n).astype(z.dtype, copy=False)
        return (w * losses).sum() / n

    def backward(self):
        """The gradient of the last ``forward``'s loss with respect to its first argument.

        It is handed out once (and not kept): a second call needs a new ``forward``.
        """
        if getattr(self, "_grad", None) is None:
            raise RuntimeError("CrossEntropy.backward called before forward, or twice after one forward")
        grad, self._grad = self._grad, None
        return grad

    # ------------------------------------------------------------------ input
    @staticmethod
    def _check(y_pred, what):
        if not hasattr(y_pred, "ndim"):
            raise TypeError(f"CrossEntropy: {what} must be a NumPy or CuPy array, got {type(y_pred).__name__}")
        if y_pred.ndim != 2:
            raise ValueError(f"CrossEntropy: expected {what} of shape (N, K), got {tuple(y_pred.shape)}")
        if y_pred.dtype.kind != "f":
            raise ValueError(f"CrossEntropy: {what} must be floating point, got dtype {y_pred.dtype}")
        if y_pred.shape[0] == 0:
            raise ValueError(f"CrossEntropy: {what} holds no samples; the mean loss of none is undefined")
        return y_pred

    def _targets(self, y_true, y_pred, check_values=True, sample_weight=None):
        """Targets as float rows ``y`` (N, K) and per-sample weights ``w`` (N,), validated.

        ``check_values=False`` checks shapes and dtypes only (``batch_loss``'s ``check_labels``).
        """
        xp = get_array_module(y_pred)
        n, k = y_pred.shape
        y_true = to_device(y_true, xp=xp)  # on y_pred's device
        if y_true.ndim == 1:
            if y_true.shape[0] != n:
                raise ValueError(f"CrossEntropy: {y_true.shape[0]} labels for {n} predictions")
            check_class_indices(y_true, "CrossEntropy", check_values=check_values)
            labels = y_true.astype(xp.int64)
            if check_values and (int(labels.min()) < 0 or int(labels.max()) >= k):
                raise ValueError(
                    f"CrossEntropy: labels must be class indices in [0, {k - 1}], "
                    f"got values from {int(labels.min())} to {int(labels.max())}"
                )
            y = (labels[:, None] == xp.arange(k)[None, :]).astype(y_pred.dtype)
        elif y_true.ndim == 2:
            if y_true.shape != (n, k):
                raise ValueError(
                    f"CrossEntropy: one-hot targets must have shape {(n, k)}, got {tuple(y_true.shape)}"
                )
            if check_values:
                check_target_rows(y_true, "CrossEntropy")
            y = y_true.astype(y_pred.dtype)
        else:
            raise ValueError(f"CrossEntropy: labels must be (N,) or (N, K), got shape {tuple(y_true.shape)}")
        if self.class_weight is None:
            w = xp.ones(n, dtype=y_pred.dtype)
        else:
            w = y @ self._class_weights(k, xp, y_pred.dtype)
        if sample_weight is None:
            return y, w
        # Moved to y_pred's device, as y_true is.
        return y, w * to_device(check_sample_weight(sample_weight, n, y_pred.dtype, "CrossEntropy",
                                                    check_values=check_values), xp=xp)

    def _class_weights(self, k, xp, dtype):
        """The (K,) weight of each class (a dict's missing classes weigh 1)."""
        if isinstance(self.class_weight, dict):
            weights = [1.0] * k
            for cls, weight in self.class_weight.items():
                if cls >= k:
                    raise ValueError(f"CrossEntropy: class_weight names class {cls}, but there are {k} classes")
                weights[cls] = weight
        else:
            weights = self.class_weight
            if len(weights) != k:
                raise ValueError(f"CrossEntropy: class_weight has {len(weights)} entries for {k} classes")
        return xp.asarray(weights, dtype=dtype)

    def get_config(self):
        cw = self.class_weight
        if isinstance(cw, dict):
            cw = {str(k): v for k, v in cw.items()}  # JSON's keys are strings
        elif cw is not None:
            cw = list(cw)  # a copy: changing the config must not change the loss
        return {"from_logits": self.from_logits, "class_weight": cw}


def _check_probabilities(p):
    """``ValueError`` unless ``p`` holds probabilities in [0, 1] (reads them: on a GPU it waits)."""
    if not p.size:
        return
    low, high = float(p.min()), float(p.max())  # NaN anywhere makes both NaN
    if math.isnan(low):
        raise ValueError("CrossEntropy: y_pred holds NaN")
    if not (low >= 0.0 and high <= 1.0):
        raise ValueError(f"CrossEntropy: y_pred must be probabilities in [0, 1], got values from {low} to "
                         f"{high}; for scores, use CrossEntropy(from_logits=True)")


def _check_finite_logits(z):
    """``ValueError`` unless ``z`` is finite everywhere (reads it: on a GPU it waits)."""
    if not bool(get_array_module(z).isfinite(z).all()):
        raise ValueError("CrossEntropy: the logits hold NaN or infinity")


def _checked_class_weight(class_weight):
    """``class_weight`` as a list of floats, or a dict {class index: float}; ``ValueError`` if it is neither.

    A dict's classes may be ints or, as in a saved model's JSON, their digits.
    """
    def weight(value):
        number = finite_float(value)
        if number is None or number < 0:
            raise ValueError(f"CrossEntropy: class_weight must hold finite, non-negative numbers, got {value!r}")
        return number

    def class_index(key):
        if isinstance(key, str) and key.isascii() and key.isdigit():
            return int(key)
        if not is_int(key) or key < 0:
            raise ValueError(f"CrossEntropy: class_weight's classes must be non-negative ints, got {key!r}")
        return int(key)

    if isinstance(class_weight, dict):
        weights = {class_index(key): weight(value) for key, value in class_weight.items()}
        if len(weights) < len(class_weight):
            raise ValueError(f"CrossEntropy: class_weight names a class twice, got {class_weight!r}")
        return weights
    if isinstance(class_weight, (str, bytes)) or not hasattr(class_weight, "__len__"):
        raise ValueError("CrossEntropy: class_weight must be a sequence of one weight per class or a dict "
                         f"{{class: weight}}, got {class_weight!r}")
    return [weight(value) for value in class_weight]


# ------------------------------------------- label and weight checks, shared with model, data and metrics
def check_sample_weight(sample_weight, n, dtype, caller, check_values=True):
    """``sample_weight`` as an (n,) array of ``dtype``, where it lives: one weight per sample.

    Raises ``ValueError`` naming ``caller`` for another shape, non-numbers,
    and (with ``check_values``, which on a GPU waits for the values) weights
    that are negative, NaN, or infinite once in ``dtype``.
    """
    xp = get_array_module(sample_weight)
    w = xp.asarray(sample_weight)
    if w.shape != (n,):
        raise ValueError(f"{caller}: sample_weight must have shape {(n,)}, one weight per sample, "
                         f"got {tuple(w.shape)}")
    if w.dtype.kind not in "fiub":
        raise ValueError(f"{caller}: sample_weight must be numbers, got dtype {w.dtype}")
    largest = xp.finfo(dtype).max
    if check_values and n and not bool(xp.all(xp.isfinite(w) & (w >= 0) & (w <= largest))):
        raise ValueError(f"{caller}: sample_weight must be finite {xp.dtype(dtype).name} numbers, not negative")
    return w.astype(dtype, copy=False)


def check_class_indices(y, caller, name="labels", check_values=True):
    """``ValueError`` naming ``caller`` and ``name`` unless ``y`` holds whole numbers, as class indices must.

    Integer (or boolean) arrays pass; float arrays must hold finite whole
    values, so that converting them to indices loses nothing (0.5 would
    silently become class 0, NaN or infinity a huge negative number). With
    ``check_values=False`` only the dtype is checked (the values were
    checked before). On a GPU the value check waits once.
    """
    if y.dtype.kind in "iub":
        return
    if y.dtype.kind != "f":
        raise ValueError(f"{caller}: {name} must be whole class indices, got dtype {y.dtype}")
    xp = get_array_module(y)
    # Below 2**63 in size too, so that converting to int64 indices keeps the value (1e30 would wrap around).
    if check_values and not bool(xp.all((xp.abs(y) < 2.0**63) & (y == xp.round(y)))):  # NaN compares false
        raise ValueError(f"{caller}: {name} must be whole class indices, got non-integer, NaN, infinite or "
                         "huge (beyond int64) values")


#: How far from 1 a target row may sum: rounding, not a second label (the gradient is exact either way).
ROW_SUM_TOLERANCE = 1e-3


def check_target_rows(y, caller):
    """``ValueError`` naming ``caller`` unless every row of ``y`` (N, K) is a probability vector.

    Not negative, and summing to 1 within ``ROW_SUM_TOLERANCE`` (rounding:
    float32 probabilities, say, converted to float64). On a GPU this waits
    once for the values.
    """
    xp = get_array_module(y)
    if not len(y):
        return
    if y.dtype.kind not in "fiub":
        raise ValueError(f"{caller}: target rows must be numbers, got dtype {y.dtype}")
    sums = y.sum(axis=1, dtype=xp.float64)
    off = ~(xp.abs(sums - 1.0) <= ROW_SUM_TOLERANCE)  # NaN and infinity are off too
    negative = xp.any(y < 0)
    if not bool(negative | xp.any(off)):
        return
    if bool(negative) or not bool(xp.all(xp.isfinite(y))):
        raise ValueError(f"{caller}: target rows must be finite and not negative")
    row = int(xp.argmax(off))
    raise ValueError(f"{caller}: target rows must sum to 1 (one-hot or probabilities), but row {row} sums to "
                     f"{float(sums[row])!r}; rows with several labels, or none, need another loss than "
                     "cross-entropy over a softmax")
