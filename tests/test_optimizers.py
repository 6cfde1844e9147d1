"""Optimisers: PyTorch's torch.optim as the oracle, state round trips, input checks."""
import ast
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidl import optimizers
from minidl.optimizers import SGD, Adam, RMSProp, from_config, get

SHAPES = [(6, 4), (4,), (3, 3, 2, 5), ()]
#: Gradient scale per parameter, so that eps matters for some and not for others.
SCALES = [1.0, 1e-3, 10.0, 0.1]
RTOL = {np.float64: 1e-12, np.float32: 1e-5}

#: (class name, hyperparameters) of every variant checked against PyTorch.
VARIANTS = {
    "sgd": ("SGD", dict(lr=0.05)),
    "sgd-momentum": ("SGD", dict(lr=0.05, momentum=0.9)),
    "sgd-nesterov": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    "sgd-weight-decay": ("SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.01)),
    "rmsprop": ("RMSProp", dict(lr=0.01, rho=0.9, eps=1e-7)),
    "rmsprop-weight-decay": ("RMSProp", dict(lr=0.01, rho=0.8, eps=1e-6, weight_decay=0.05)),
    "adam": ("Adam", dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-7)),
    "adam-weight-decay": ("Adam", dict(lr=0.02, beta1=0.8, beta2=0.99, eps=1e-8, weight_decay=0.01)),
}

#: minidl's name of each state array -> PyTorch's, per optimiser.
TORCH_STATE = {
    "SGD": {"b": "momentum_buffer"},
    "RMSProp": {"v": "square_avg"},
    "Adam": {"m": "exp_avg", "v": "exp_avg_sq"},
}


def torch_optimizer(torch, class_name, params, hp):
    """The torch.optim optimiser with the same rule as minidl's ``class_name(**hp)``."""
    hp = dict(hp)
    if class_name == "SGD":
        return torch.optim.SGD(params, **hp)
    if class_name == "RMSProp":
        return torch.optim.RMSprop(params, alpha=hp.pop("rho", 0.9), eps=hp.pop("eps", 1e-7), **hp)
    betas = (hp.pop("beta1", 0.9), hp.pop("beta2", 0.999))
    return torch.optim.Adam(params, betas=betas, eps=hp.pop("eps", 1e-7), **hp)


def assert_close(actual, expected, rtol, scale, what):
    """``actual == expected`` to ``rtol`` relative to ``scale``, the size of the numbers that
    were added up to make them: an entry that ends near zero through cancellation carries
    rounding errors of that size, not of its own."""
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def largest(x):
    return float(np.max(np.abs(x), initial=0.0))


def draw_params(rng, dtype, shapes=SHAPES):
    return [np.asarray(rng.standard_normal(s), dtype=dtype) for s in shapes]


def draw_grads(rng, dtype, shapes=SHAPES):
    return [np.asarray(c * rng.standard_normal(s), dtype=dtype) for s, c in zip(shapes, SCALES)]


def run_against_torch(class_name, hp, dtype, steps, lr_at=None, seed=0, shapes=SHAPES, rtol=None, resync=False):
    """Step minidl and torch.optim side by side on the same gradients, comparing every step.

    ``rtol`` defaults to ``RTOL[dtype]``; the state arrays are compared at the end.
    With ``resync``, minidl's parameters and state are set to torch's after each
    compared step, so that every step is checked from identical inputs and
    rounding differences cannot compound (some random hyperparameters, e.g. Adam
    with ``beta2 = 0`` and a large rate, make the trajectory chaotic).
    """
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    params = draw_params(rng, dtype, shapes)
    start = [p.copy() for p in params]
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    ours = optimizers.OPTIMIZER_CLASSES[class_name](**hp)
    theirs = torch_optimizer(torch, class_name, tparams, hp)
    rtol = RTOL[dtype] if rtol is None else rtol
    param_size = [largest(p) for p in params]
    grad_size = [0.0 for _ in params]  # of g + weight_decay * theta, the gradient the rules use
    for step in range(steps):
        if lr_at is not None:
            ours.lr = lr_at(step)
            for group in theirs.param_groups:
                group["lr"] = lr_at(step)
        grads = draw_grads(rng, dtype, shapes)
        for i, (p, g) in enumerate(zip(params, grads)):
            grad_size[i] = max(grad_size[i], largest(g) + ours.weight_decay * largest(p))
        ours.step(params, grads)
        for t, g in zip(tparams, grads):
            t.grad = torch.from_numpy(g.copy())
        theirs.step()
        for i, (p, t) in enumerate(zip(params, tparams)):
            assert p.dtype == dtype
            expected = t.detach().numpy()
            param_size[i] = max(param_size[i], largest(expected))
            assert_close(p, expected, rtol, param_size[i], f"step {step + 1}, parameter {i}")
            if resync:
                p[...] = expected
                for name in ours.slots:
                    ours.state[name][i][...] = theirs.state[t][TORCH_STATE[class_name][name]].numpy()
    for name in ours.slots:
        torch_name = TORCH_STATE[class_name][name]
        power = 2 if name == "v" else 1
        for i, t in enumerate(tparams):
            # |m| <= G, |v| <= G**2 and |b| <= G / (1 - momentum), G the largest gradient
            scale = grad_size[i] ** power / (1 - getattr(ours, "momentum", 0.0))
            expected = theirs.state[t][torch_name].numpy()
            assert_close(ours.state[name][i], expected, rtol, scale, f"state {name}/{i}")
    assert ours.t == steps
    assert any(not np.array_equal(p, p0) for p, p0 in zip(params, start))
    return ours


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_matches_torch_step_for_step(variant, dtype):
    class_name, hp = VARIANTS[variant]
    run_against_torch(class_name, hp, dtype, steps=120)


@pytest.mark.parametrize("variant", ["sgd-nesterov", "rmsprop", "adam"])
def test_learning_rate_changed_between_steps_matches_torch(variant):
    class_name, hp = VARIANTS[variant]

    def lr_at(step):
        if 40 <= step < 50:
            return 0.0
        return hp["lr"] * 0.5 ** (step // 20)

    run_against_torch(class_name, hp, np.float64, steps=100, lr_at=lr_at)


@st.composite
def optimizer_setups(draw):
    weight_decay = draw(st.sampled_from([0.0, 1e-4, 0.1]))
    lr = draw(st.floats(1e-4, 0.5))
    class_name = draw(st.sampled_from(["SGD", "RMSProp", "Adam"]))
    if class_name == "SGD":
        momentum = draw(st.sampled_from([0.0, 0.5, 0.9, 0.99]))
        nesterov = momentum > 0 and draw(st.booleans())
        hp = dict(momentum=momentum, nesterov=nesterov)
    elif class_name == "RMSProp":
        hp = dict(rho=draw(st.floats(0.0, 0.999)), eps=draw(st.floats(1e-10, 1e-3)))
    else:
        hp = dict(
            beta1=draw(st.floats(0.0, 0.99)),
            beta2=draw(st.floats(0.0, 0.9999)),
            eps=draw(st.floats(1e-10, 1e-3)),
        )
    return class_name, dict(lr=lr, weight_decay=weight_decay, **hp)


@given(optimizer_setups(), st.integers(0, 2**32 - 1))
def test_random_hyperparameters_match_torch(setup, seed):
    # Adam and RMSProp turn a gradient that weight decay has all but cancelled into a
    # full-size step, and so amplify the last-bit differences between NumPy's
    # arithmetic and PyTorch's fused multiply-adds: hence 1e-9 rather than 1e-12 here.
    class_name, hp = setup
    run_against_torch(class_name, hp, np.float64, steps=25, seed=seed, shapes=[(5, 3), (3,)], rtol=1e-9,
                      resync=True)


@given(
    st.floats(1e-4, 1.0),
    st.lists(st.floats(1e-2, 1e2) | st.floats(-1e2, -1e-2), min_size=1, max_size=8),
)
def test_first_adam_step_is_lr_times_sign_of_gradient(lr, gradient):
    # With bias correction m_hat = g and v_hat = g**2 at t = 1: the thesis's
    # uncorrected rule would step (1 - beta1) / sqrt(1 - beta2), about 3.2, times further.
    g = np.array(gradient)
    theta = np.zeros_like(g)
    Adam(lr=lr, eps=1e-12).step([theta], [g])
    np.testing.assert_allclose(theta, -lr * np.sign(g), rtol=1e-9)


@given(st.floats(0.0, 0.99), st.floats(1e-3, 1e3))
def test_first_rmsprop_step_divides_by_root_of_one_minus_rho(rho, gradient):
    theta = np.zeros(1)
    RMSProp(lr=0.1, rho=rho, eps=1e-300).step([theta], [np.array([gradient])])  # eps: no effect at 1e-12
    np.testing.assert_allclose(theta, [-0.1 / math.sqrt(1 - rho)], rtol=1e-12)


def variant_optimizer(variant):
    class_name, hp = VARIANTS[variant]
    return optimizers.OPTIMIZER_CLASSES[class_name](**hp)


@pytest.mark.parametrize("through_npz", [False, True], ids=["dict", "npz"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_state_round_trip_gives_identical_steps(variant, through_npz):
    rng = np.random.default_rng(1)
    grads = [draw_grads(rng, np.float32) for _ in range(20)]
    original = variant_optimizer(variant)
    params = draw_params(rng, np.float32)
    for g in grads[:10]:
        original.step(params, g)
    original.lr *= 0.3

    config = json.loads(json.dumps(original.get_config()))
    state = original.get_state()
    if through_npz:
        buffer = io.BytesIO()
        np.savez(buffer, **state)
        buffer.seek(0)
        state = dict(np.load(buffer))
    restored = from_config(type(original).__name__, config)
    restored.set_state(state)
    assert restored.get_config() == original.get_config()

    copies = [p.copy() for p in params]
    for g in grads[10:]:
        original.step(params, g)
        restored.step(copies, g)
    for p, q in zip(params, copies):
        np.testing.assert_array_equal(p, q)
    assert restored.t == original.t == 20


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_format_and_dtype_follow_the_parameters(dtype):
    opt = Adam()
    assert set(opt.get_state()) == {"t"}
    params = draw_params(np.random.default_rng(2), dtype)
    opt.step(params, [np.ones_like(p) for p in params])
    state = opt.get_state()
    assert state["t"].shape == () and state["t"].dtype == np.int64 and state["t"] == 1
    assert set(state) == {"t"} | {f"{s}/{i}" for s in ("m", "v") for i in range(len(SHAPES))}
    for i, p in enumerate(params):
        assert isinstance(state[f"m/{i}"], np.ndarray)
        assert state[f"m/{i}"].dtype == dtype and state[f"m/{i}"].shape == p.shape
        np.testing.assert_allclose(state[f"m/{i}"], 0.1)


def test_plain_sgd_has_only_a_step_count():
    params = draw_params(np.random.default_rng(3), np.float64)
    opt = SGD(lr=0.1)
    opt.step(params, params)
    assert set(opt.get_state()) == {"t"}
    fresh = SGD(lr=0.1)
    fresh.set_state(opt.get_state())
    assert fresh.t == 1


def test_get_state_and_set_state_copy_the_arrays():
    rng = np.random.default_rng(4)
    params = draw_params(rng, np.float64)
    opt = RMSProp()
    opt.step(params, draw_grads(rng, np.float64))
    state = opt.get_state()
    saved = {k: v.copy() for k, v in state.items()}
    opt.step(params, draw_grads(rng, np.float64))
    for key in saved:
        np.testing.assert_array_equal(state[key], saved[key])

    fresh = RMSProp()
    fresh.set_state(state)
    fresh.step(params, draw_grads(rng, np.float64))
    for key in saved:
        np.testing.assert_array_equal(state[key], saved[key])


def test_restored_float64_state_is_cast_to_float32_parameters():
    params = draw_params(np.random.default_rng(5), np.float32)
    opt = Adam()
    opt.set_state({"t": np.array(3), **{f"{s}/{i}": np.ones(p.shape) for s in "mv" for i, p in enumerate(params)}})
    opt.step(params, [np.ones_like(p) for p in params])
    assert all(a.dtype == np.float32 for arrays in opt.state.values() for a in arrays)
    assert opt.t == 4


def test_step_updates_in_place_and_leaves_the_gradients_alone():
    rng = np.random.default_rng(6)
    params = draw_params(rng, np.float64)
    grads = draw_grads(rng, np.float64)
    before_p = [p.copy() for p in params]
    before_g = [g.copy() for g in grads]
    ids = [id(p) for p in params]
    for opt in (SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.1), RMSProp(weight_decay=0.1), Adam(weight_decay=0.1)):
        opt.step(params, grads)
    assert [id(p) for p in params] == ids
    assert all(not np.array_equal(p, p0) for p, p0 in zip(params, before_p))
    for g, g0 in zip(grads, before_g):
        np.testing.assert_array_equal(g, g0)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: SGD(lr=-0.1), "lr"),
        (lambda: SGD(lr=float("nan")), "lr"),
        (lambda: SGD(lr="0.1"), "lr"),
        (lambda: Adam(lr=True), "lr"),
        (lambda: SGD(momentum=1.0), "momentum"),
        (lambda: SGD(momentum=-0.5), "momentum"),
        (lambda: SGD(nesterov=True), "nesterov"),
        (lambda: SGD(momentum=0.9, nesterov=1), "nesterov"),
        (lambda: SGD(weight_decay=-1e-4), "weight_decay"),
        (lambda: RMSProp(rho=1.0), "rho"),
        (lambda: RMSProp(eps=-1e-7), "eps"),
        (lambda: Adam(beta1=1.0), "beta1"),
        (lambda: Adam(beta2=-0.1), "beta2"),
        (lambda: Adam(eps=float("inf")), "eps"),
        (lambda: Adam(weight_decay=float("-inf")), "weight_decay"),
    ],
)
def test_bad_hyperparameters_are_named(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize("optimizer_class", [RMSProp, Adam])
def test_eps_0_is_refused_as_it_turns_a_parameter_with_zero_gradients_into_nan(optimizer_class):
    theta = np.ones(2)
    optimizer_class(eps=1e-7).step([theta], [np.zeros(2)])
    assert np.isfinite(theta).all()  # what eps is for: 0 / (0 + eps)
    for eps in (0.0, -1e-7):
        with pytest.raises(ValueError, match=rf"^{optimizer_class.__name__}: eps must be positive, got {eps!r}: with 0, "
                                             "a parameter whose gradient is 0"):
            optimizer_class(eps=eps)


@pytest.mark.parametrize("state", [None, 0, "t", [1, 2]])
def test_set_state_refuses_what_is_not_a_dict(state):
    with pytest.raises(TypeError, match=r"^Adam.set_state: state must be a dict, as get_state\(\) returns, got "):
        Adam().set_state(state)


@pytest.mark.parametrize("variant", ["sgd-momentum", "rmsprop", "adam"])
def test_numpy_scalar_learning_rate_steps_like_a_python_float(variant):
    # A schedule may compute lr with NumPy; a float64 scalar must not push float32 updates into float64.
    rng = np.random.default_rng(8)
    grads = [draw_grads(rng, np.float32) for _ in range(5)]
    params = draw_params(rng, np.float32)
    copies = [p.copy() for p in params]
    python_lr, numpy_lr = variant_optimizer(variant), variant_optimizer(variant)
    for step, g in enumerate(grads):
        python_lr.lr = 0.01 / (step + 3)
        numpy_lr.lr = np.float64(0.01) / np.float64(step + 3)
        python_lr.step(params, g)
        numpy_lr.step(copies, g)
    for p, q in zip(params, copies):
        np.testing.assert_array_equal(p, q)


def test_bad_learning_rate_set_between_steps_is_caught_at_the_step():
    opt = Adam()
    opt.lr = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.step([np.zeros(2)], [np.ones(2)])


def test_bad_step_inputs():
    opt = Adam()
    p = [np.zeros((2, 3)), np.zeros(4)]
    with pytest.raises(ValueError, match="2 parameters but 1 gradients"):
        opt.step(p, [np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"gradient 1 has shape \(5,\) but parameter 1 has shape \(4,\)"):
        opt.step(p, [np.zeros((2, 3)), np.zeros(5)])
    with pytest.raises(ValueError, match="parameter 0 must be a floating-point array"):
        opt.step([np.zeros(3, dtype=np.int64)], [np.zeros(3)])
    with pytest.raises(ValueError, match="parameter 0 must be a floating-point array"):
        opt.step([np.float64(1.0)], [np.float64(1.0)])
    with pytest.raises(ValueError, match="gradient 0 must be an array"):
        opt.step([np.zeros(())], [0.5])
    assert opt.t == 0 and not any(opt.state.values())


def test_a_different_parameter_list_is_an_error():
    opt = SGD(momentum=0.9)
    opt.step([np.zeros(2), np.zeros(3)], [np.ones(2), np.ones(3)])
    with pytest.raises(ValueError, match="holds 2 parameters but got 1"):
        opt.step([np.zeros(2)], [np.ones(2)])
    with pytest.raises(ValueError, match=r"parameter 1 has shape \(3,\) but the parameter has shape \(4,\)"):
        opt.step([np.zeros(2), np.zeros(4)], [np.ones(2), np.ones(4)])


@pytest.mark.parametrize(
    "state, message",
    [
        ({"m/0": np.zeros(2), "v/0": np.zeros(2)}, "no step count"),
        ({"t": np.array(-1)}, "non-negative integer"),
        ({"t": np.array(1.5)}, "non-negative integer"),
        ({"t": np.array(True)}, "non-negative integer"),  # a flag, not a count of steps
        ({"t": np.array([1, 2])}, "non-negative integer"),
        ({"t": np.array(2**62)}, "below 2\\*\\*62"),  # the bound itself is refused
        ({"t": np.array(2**63 - 1)}, "below 2\\*\\*62"),  # one more step and int64 would wrap to negative
        ({"t": np.array(2**64 - 1, dtype=np.uint64)}, "below 2\\*\\*62"),
        ({"t": np.array(1), "m/0": np.zeros(2), "v/0": np.zeros(2), "b/0": np.zeros(2)}, "unexpected key 'b/0'"),
        ({"t": np.array(1), "m/x": np.zeros(2), "v/0": np.zeros(2)}, "unexpected key 'm/x'"),
        ({"t": np.array(1), "m/0": np.zeros(2), "v/0": np.zeros(2), "m/1": np.zeros(2)}, "one array per parameter"),
        ({"t": np.array(1), "m/1": np.zeros(2), "v/1": np.zeros(2)}, "one array per parameter"),
        ({"t": np.array(1), "m/0": np.zeros(2, dtype=np.int32), "v/0": np.zeros(2)}, "floating-point"),
        ({"t": np.array(4)}, "no \\['m', 'v'\\] arrays"),
    ],
)
def test_malformed_state_is_rejected(state, message):
    opt = Adam()
    with pytest.raises(ValueError, match=message):
        opt.set_state(state)
    assert opt.t == 0


def test_restored_state_must_fit_the_parameters():
    opt = RMSProp()
    opt.set_state({"t": np.array(2), "v/0": np.ones(3)})
    with pytest.raises(ValueError, match=r"state 'v' of parameter 0 has shape \(3,\)"):
        opt.prepare([np.zeros(2)])
    with pytest.raises(ValueError, match=r"state 'v' of parameter 0 has shape \(3,\)"):
        opt.step([np.zeros(2)], [np.ones(2)])
    assert opt.t == 2


def test_prepare_fits_a_restored_state_to_the_parameters_without_stepping():
    opt = Adam()
    opt.set_state({"t": np.array(3), "m/0": np.full(2, 0.5), "v/0": np.full(2, 0.25)})
    theta = np.zeros(2, dtype=np.float32)
    opt.prepare([theta])
    assert opt.t == 3 and np.all(theta == 0)
    assert opt.state["m"][0].dtype == np.float32 and np.all(opt.state["m"][0] == 0.5)
    fresh = SGD(momentum=0.9)
    fresh.prepare([theta])
    assert fresh.t == 0 and fresh.state["b"][0].shape == (2,) and not fresh.state["b"][0].any()


def test_config_holds_the_current_learning_rate_and_rebuilds_the_optimiser():
    opt = SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    opt.lr = np.float64(0.025)
    config = opt.get_config()
    assert json.loads(json.dumps(config)) == config
    assert config == {"lr": 0.025, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}
    rebuilt = from_config("SGD", config)
    assert isinstance(rebuilt, SGD) and rebuilt.get_config() == config
    assert from_config("Adam", Adam(beta2=0.99).get_config()).beta2 == 0.99
    with pytest.raises(ValueError, match="unknown optimizer class"):
        from_config("Adagrad", {})
    with pytest.raises(ValueError, match="cannot be built"):
        from_config("Adam", {"rho": 0.9})


def test_get_by_name_or_instance():
    assert type(get("adam")) is Adam and get("adam").get_config() == Adam().get_config()
    assert type(get("RMSProp")) is RMSProp and type(get("sgd")) is SGD
    opt = SGD(0.3)
    assert get(opt) is opt
    for bad in ("adagrad", None):
        with pytest.raises(ValueError, match="unknown optimizer"):
            get(bad)
    with pytest.raises(TypeError, match=r"^got the class SGD; pass an instance, SGD\(\)$"):
        get(SGD)


def test_module_imports_no_array_library():
    tree = ast.parse(Path(optimizers.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    assert imported == {"math", "numbers", ".backend"}


@pytest.mark.gpu
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cupy_parameters_step_like_numpy_and_take_restored_state(variant):
    import cupy

    rng = np.random.default_rng(7)
    grads = [draw_grads(rng, np.float64) for _ in range(12)]
    params = draw_params(rng, np.float64)
    on_gpu = [cupy.asarray(p) for p in params]
    cpu, gpu = variant_optimizer(variant), variant_optimizer(variant)
    for g in grads[:6]:
        cpu.step(params, g)
        gpu.step(on_gpu, [cupy.asarray(x) for x in g])
    assert all(type(a) is cupy.ndarray for arrays in gpu.state.values() for a in arrays)
    restored = variant_optimizer(variant)
    restored.set_state(cpu.get_state())
    copies = [cupy.asarray(p) for p in params]
    for g in grads[6:]:
        cpu.step(params, g)
        gpu.step(on_gpu, [cupy.asarray(x) for x in g])
        restored.step(copies, [cupy.asarray(x) for x in g])
    for p, q, r in zip(params, on_gpu, copies):
        assert_close(cupy.asnumpy(q), p, 1e-12, largest(p), "GPU run")
        assert_close(cupy.asnumpy(r), p, 1e-12, largest(p), "GPU run from restored state")
    with pytest.raises(ValueError, match="same device"):
        gpu.step(on_gpu, grads[0])


def test_the_config_holds_plain_floats_for_json_whatever_lr_was_set_to():
    opt = SGD()
    opt.lr = np.float32(0.5)  # as a schedule computed with NumPy might set it
    config = opt.get_config()
    assert type(config["lr"]) is float and json.loads(json.dumps(config))["lr"] == 0.5
