"""Sequential on CuPy: training, evaluation, prediction, saving and the input pipeline
give on the GPU what they give on NumPy.

Each test runs the same seeded code under both backends and compares. Both runs
use float32, so they differ only by summation order (cuBLAS against OpenBLAS),
and SGD (not Adam, whose steps amplify differences where a gradient is near 0)
keeps those differences as small after training as after one step.

Every test here is marked ``gpu`` and is skipped without CuPy and a CUDA GPU
(see tests/conftest.py).
"""
import numpy as np
import pytest
from model_fixtures import FLOAT32, tiny_cnn, tiny_images

from minidl import Sequential
from minidl.data import ArrayBatches, random_flip_rotate
from minidl.optimizers import SGD

cupy = pytest.importorskip("cupy")
pytestmark = pytest.mark.gpu


def trained(x, y, xv, yv):
    """A seeded CNN with dropout after two epochs of SGD on the current backend, and its history."""
    model = tiny_cnn(dropout=0.25, optimizer=SGD(0.1, momentum=0.9))
    history = model.fit(x, y, epochs=2, batch_size=16, validation_data=(xv, yv), verbose=0)
    return model, history


def test_training_on_cupy_follows_training_on_numpy(use_backend):
    x, y = tiny_images(64, seed=1)
    xv, yv = tiny_images(32, seed=2)
    use_backend("numpy")
    cpu, cpu_history = trained(x, y, xv, yv)
    use_backend("cupy")
    gpu, gpu_history = trained(x, y, xv, yv)
    assert all(isinstance(p, cupy.ndarray) for layer in gpu.layers for p in layer.params.values())
    for a, b in zip(gpu.get_weights(), cpu.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, **FLOAT32)
    assert set(gpu_history.history) == set(cpu_history.history)
    for key, values in cpu_history.history.items():
        np.testing.assert_allclose(gpu_history.history[key], values, **FLOAT32)
    # the weights moved: the comparison above is of two trainings, not of two initialisations
    assert not np.allclose(cpu.get_weights()[0], tiny_cnn().get_weights()[0])


def test_predict_and_evaluate_on_cupy_agree_with_numpy(use_backend):
    x, y = tiny_images(40, seed=3)
    w = np.linspace(0.5, 2.0, len(y))
    use_backend("numpy")
    cpu = tiny_cnn()
    use_backend("cupy")
    gpu = tiny_cnn()
    gpu.set_weights(cpu.get_weights())  # NumPy arrays into a model on the GPU
    p = gpu.predict(x, batch_size=16)
    assert isinstance(p, np.ndarray) and p.shape == (40, 2)
    np.testing.assert_allclose(p, cpu.predict(x, batch_size=16), **FLOAT32)
    gpu_logs, cpu_logs = gpu.evaluate(x, y, sample_weight=w), cpu.evaluate(x, y, sample_weight=w)
    assert gpu_logs["loss"] == pytest.approx(cpu_logs["loss"], rel=1e-5)
    assert gpu_logs["accuracy"] == cpu_logs["accuracy"]


def test_a_model_saved_on_the_gpu_loads_on_either_backend(use_backend, tmp_path):
    x, y = tiny_images(32, seed=4)
    use_backend("cupy")
    model = tiny_cnn(optimizer=SGD(0.1, momentum=0.9))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.npz")
    p = model.predict(x)
    again = Sequential.load(tmp_path / "m.npz")
    assert all(isinstance(q, cupy.ndarray) for layer in again.layers for q in layer.params.values())
    np.testing.assert_allclose(again.predict(x), p, rtol=1e-6, atol=1e-7)
    # training goes on from the same optimiser state on both
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    again.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for a, b in zip(again.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    use_backend("numpy")
    on_cpu = Sequential.load(tmp_path / "m.npz")
    assert all(isinstance(q, np.ndarray) for layer in on_cpu.layers for q in layer.params.values())
    np.testing.assert_allclose(on_cpu.predict(x), p, **FLOAT32)


def test_array_batches_of_uint8_images_arrive_on_the_gpu_as_on_the_cpu(use_backend):
    # MURA's pipeline: uint8 images on the host, converted and augmented where the model is.
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, size=(20, 9, 7, 1), dtype=np.uint8)
    y = rng.integers(0, 2, size=20)

    def batches():
        return list(ArrayBatches(x, y, batch_size=8, seed=6, augment=random_flip_rotate))

    use_backend("numpy")
    cpu = batches()
    use_backend("cupy")
    gpu = batches()
    assert len(gpu) == len(cpu) == 3
    for (xg, yg), (xc, yc) in zip(gpu, cpu, strict=True):
        assert isinstance(xg, cupy.ndarray) and xg.dtype == np.float32 and xg.shape == xc.shape
        np.testing.assert_array_equal(yg, yc)
        # Linear interpolation at float32 coordinates computed on two devices: a sample point
        # that lands within rounding of the image's edge may take the fill on one and not the
        # other, so a few pixels may differ by a lot; the rest agree to rounding.
        close = np.isclose(cupy.asnumpy(xg), xc, rtol=1e-4, atol=1e-2)
        assert close.mean() > 0.99


def test_flips_are_the_same_on_both_devices():
    x = np.random.default_rng(7).standard_normal((6, 5, 4, 2)).astype(np.float32)
    cpu = random_flip_rotate(x, np.random.default_rng(8), max_degrees=0)
    gpu = random_flip_rotate(cupy.asarray(x), np.random.default_rng(8), max_degrees=0)
    np.testing.assert_array_equal(cupy.asnumpy(gpu), cpu)
    assert not np.array_equal(cpu, x)  # some images were mirrored


def test_a_list_of_cupy_samples_is_taken_as_an_array_of_them(use_backend):
    use_backend("cupy")
    x, y = tiny_images(12)
    samples = [cupy.asarray(sample) for sample in x]
    model = tiny_cnn(optimizer=SGD(0.1))
    np.testing.assert_array_equal(model.predict(samples), model.predict(cupy.asarray(x)))
    history = model.fit(samples, list(y), epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
