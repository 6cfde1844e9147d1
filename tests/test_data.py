"""Batching, shuffling and augmentation (minidl.data)."""
import numpy as np
import pytest

from minidl import backend
from minidl.data import ArrayBatches, random_flip_rotate


def epoch(batches):
    """The (x, y) batches of one iteration, as a list."""
    return list(batches)


def test_every_sample_once_per_epoch_with_the_last_partial_batch():
    x = np.arange(10, dtype=np.uint8).reshape(10, 1) * np.ones((1, 3), dtype=np.uint8)
    y = np.arange(10) % 2
    batches = ArrayBatches(x, y, batch_size=4, shuffle=True, seed=1)
    assert len(batches) == 3
    for _ in range(3):
        pairs = epoch(batches)
        assert [len(yb) for _, yb in pairs] == [4, 4, 2]
        seen = np.concatenate([xb[:, 0] for xb, _ in pairs])
        assert sorted(seen.tolist()) == list(range(10))
        for xb, yb in pairs:
            assert xb.dtype == np.float32 and yb.dtype == np.int64
            np.testing.assert_array_equal(yb, xb[:, 0].astype(int) % 2)  # labels stay with their samples


def test_a_fresh_shuffle_each_epoch_reproducible_from_the_seed():
    x, y = np.arange(50).reshape(50, 1), np.zeros(50)

    def orders(seed, epochs=3):
        batches = ArrayBatches(x, y, batch_size=7, shuffle=True, seed=seed)
        return [np.concatenate([xb[:, 0] for xb, _ in batches]).tolist() for _ in range(epochs)]

    first, again = orders(seed=3), orders(seed=3)
    assert first == again
    assert first[0] != first[1] != first[2]
    assert orders(seed=4) != first


def test_without_shuffle_the_order_is_the_array_order():
    x = np.arange(7).reshape(7, 1)
    batches = ArrayBatches(x, np.zeros(7), batch_size=3, shuffle=False)
    assert [xb[:, 0].tolist() for xb, _ in batches] == [[0, 1, 2], [3, 4, 5], [6]]


def test_augment_then_transform_are_applied_to_each_batch():
    x = np.ones((5, 2, 2), dtype=np.uint8)
    calls = []

    def augment(xb, rng):
        calls.append(isinstance(rng, np.random.Generator))
        return xb * 3

    batches = ArrayBatches(x, np.zeros(5), batch_size=2, shuffle=False, augment=augment,
                           transform=lambda xb: (xb - 1)[..., None])
    xbs = [xb for xb, _ in batches]
    assert calls == [True, True, True]
    assert xbs[0].shape == (2, 2, 2, 1)
    assert all(np.all(xb == 2) for xb in xbs)


def test_augmentation_draws_afresh_for_every_batch_and_epoch_from_the_batches_generator():
    draws = []

    def augment(xb, rng):
        draws.append(rng.random())
        return xb

    batches = ArrayBatches(np.zeros((8, 2)), np.zeros(8), batch_size=4, seed=0, augment=augment)
    for _ in range(2):
        list(batches)
    assert len(draws) == 4 and len(set(draws)) == 4
    same_seed = ArrayBatches(np.zeros((8, 2)), np.zeros(8), batch_size=4, seed=0, augment=augment)
    list(same_seed)
    assert draws[4:] == draws[:2]  # reproducible from the seed


def test_batches_read_a_memory_mapped_array(tmp_path):
    images = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(9, 4, 4))
    images[:] = np.arange(9, dtype=np.uint8)[:, None, None]
    images.flush()
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    batches = ArrayBatches(mapped, np.arange(9), batch_size=4, seed=0)
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0, 0], yb)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="3 samples in x but 2 labels"):
        ArrayBatches(np.zeros((3, 1)), np.zeros(2))
    for batch_size in (0, 2.5, "8"):
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {batch_size!r}"):
            ArrayBatches(np.zeros((3, 1)), np.zeros(3), batch_size=batch_size)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(3,\)"):
        ArrayBatches(np.zeros((3, 1)), np.zeros(3), sample_weight=np.ones(2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_target_rows_come_in_the_batches_dtype_and_class_indices_as_int64(dtype):
    x, rows = np.zeros((4, 2)), np.eye(3)[[0, 1, 2, 1]]
    ((xb, yb),) = ArrayBatches(x, rows, batch_size=4, dtype=dtype)
    assert xb.dtype == dtype and yb.dtype == dtype
    ((_, labels),) = ArrayBatches(x, np.array([0.0, 1.0, 2.0, 1.0]), batch_size=4, dtype=dtype)
    assert labels.dtype == np.int64


@pytest.mark.parametrize("make, error, message", [
    (lambda x, y: ArrayBatches(x, None), TypeError, "ArrayBatches: y must be an array, got NoneType"),
    (lambda x, y: ArrayBatches(7, y), TypeError, "ArrayBatches: x must be an array, got int"),
    (lambda x, y: ArrayBatches(x, y, dtype=np.int32), ValueError,
     "ArrayBatches: dtype must be float32 or float64, got int32"),
    (lambda x, y: ArrayBatches(x, y, shuffle="no"), ValueError, "ArrayBatches: shuffle must be True or False, got 'no'"),
    (lambda x, y: ArrayBatches(x, y, seed=-1), ValueError,
     "ArrayBatches: seed must be None or a non-negative int, got -1"),
    (lambda x, y: ArrayBatches(x, y, seed=1.5), ValueError,
     "ArrayBatches: seed must be None or a non-negative int, got 1.5"),
    # Refused when made, not at the first batch inside fit with "'str' object is not callable".
    *[(lambda x, y, name=name, value=value: ArrayBatches(x, y, **{name: value}), TypeError,
       f"ArrayBatches: {name} must be None or a function, got {type(value).__name__}")
      for name in ("augment", "transform") for value in ("x", 0, True)],
])
def test_array_batches_refuse_what_they_cannot_batch_naming_the_argument(make, error, message):
    with pytest.raises(error) as err:
        make(np.zeros((3, 1)), np.zeros(3))
    assert str(err.value) == message


@pytest.mark.parametrize("kwargs, error, message", [
    ({"max_degrees": -10}, ValueError, "random_flip_rotate: max_degrees must be a number in [0, 180], got -10"),
    ({"max_degrees": 200}, ValueError, "random_flip_rotate: max_degrees must be a number in [0, 180], got 200"),
    ({"max_degrees": "30"}, ValueError, "random_flip_rotate: max_degrees must be a number in [0, 180], got '30'"),
    ({"fill": float("nan")}, ValueError, "random_flip_rotate: fill must be a finite number, got nan"),
    ({"flip": "yes"}, ValueError, "random_flip_rotate: flip must be True or False, got 'yes'"),
    ({"rng": 0}, TypeError, "random_flip_rotate: rng must be a numpy.random.Generator "
                            "(np.random.default_rng(seed)), got int"),
])
def test_random_flip_rotate_refuses_bad_arguments_naming_them(kwargs, error, message):
    arguments = {"x": np.zeros((2, 4, 4)), "rng": np.random.default_rng(0), **kwargs}
    with pytest.raises(error) as err:
        random_flip_rotate(**arguments)
    assert str(err.value) == message


def test_sample_weights_travel_with_their_samples():
    x, y = np.arange(10).reshape(10, 1), np.arange(10) % 3
    triples = epoch(ArrayBatches(x, y, batch_size=4, shuffle=True, seed=2, sample_weight=np.arange(10) / 10))
    assert [len(batch) for batch in triples] == [3, 3, 3]
    for xb, yb, wb in triples:
        assert wb.dtype == np.float32
        np.testing.assert_allclose(wb, xb[:, 0] / 10)
        np.testing.assert_array_equal(yb, xb[:, 0].astype(int) % 3)


def images(n=6, size=9):
    rng = np.random.default_rng(0)
    return rng.random((n, size, size)).astype(np.float32)


def test_flip_rotate_is_deterministic_for_a_seed():
    x = images()
    a = random_flip_rotate(x, np.random.default_rng(5))
    b = random_flip_rotate(x, np.random.default_rng(5))
    c = random_flip_rotate(x, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.dtype == np.float32 and a.shape == x.shape


def test_augmented_batches_keep_the_batches_dtype_and_x_may_be_a_list():
    x, y = images(n=6).astype(np.float64), np.arange(6) % 2
    for dtype in (np.float32, np.float64):
        for xb, _ in ArrayBatches(x.tolist(), y.tolist(), batch_size=4, seed=0, dtype=dtype,
                                  augment=random_flip_rotate):
            assert xb.dtype == dtype and xb.shape[1:] == x.shape[1:]
    assert random_flip_rotate(x.astype(np.uint8), np.random.default_rng(0)).dtype == np.float32
    for xb_given, xb_array in zip(ArrayBatches(tuple(x), y, batch_size=4, shuffle=False),
                                  ArrayBatches(x, y, batch_size=4, shuffle=False), strict=True):
        np.testing.assert_array_equal(xb_given[0], xb_array[0])


def test_array_batches_take_a_list_of_cupy_samples(fake_cupy):
    # Stacked with CuPy: NumPy cannot take them in.
    x, y = np.arange(12.0).reshape(6, 2), np.arange(6) % 2
    expected = epoch(ArrayBatches(x, y, batch_size=4, shuffle=False))
    got = epoch(ArrayBatches([fake_cupy.ndarray(sample) for sample in x], y, batch_size=4, shuffle=False))
    for (xb, yb), (xe, ye) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(xb, xe)
        np.testing.assert_array_equal(yb, ye)


def test_array_batches_put_x_on_the_current_backend_in_their_dtype(fake_cupy, monkeypatch):
    x, y = np.arange(10, dtype=np.uint8).reshape(5, 2), np.arange(5) % 2
    monkeypatch.setattr(backend, "_current", "cupy")
    pairs = epoch(ArrayBatches(x, y, batch_size=2, shuffle=False))
    assert all(isinstance(xb, fake_cupy.ndarray) and xb.dtype == np.float32 for xb, _ in pairs)
    np.testing.assert_array_equal(np.concatenate([xb.get() for xb, _ in pairs]), x)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in pairs]), y)  # labels stay on the host


@pytest.mark.parametrize("channels", [None, 3], ids=["BHW", "BHWC"])
def test_flips_are_exact_left_right_mirror_images(channels):
    x = images(n=40) if channels is None else np.random.default_rng(1).random((40, 9, 7, channels), np.float32)
    out = random_flip_rotate(x, np.random.default_rng(0), flip=True, max_degrees=0.0)
    mirrored = np.array([np.array_equal(o, xi[:, ::-1]) for o, xi in zip(out, x)])
    unchanged = np.array([np.array_equal(o, xi) for o, xi in zip(out, x)])
    assert np.all(mirrored | unchanged)
    assert 5 < mirrored.sum() < 35


def test_rotation_by_zero_is_the_identity_and_the_input_is_untouched():
    x = images()
    before = x.copy()
    out = random_flip_rotate(x, np.random.default_rng(0), flip=False, max_degrees=0.0)
    np.testing.assert_array_equal(out, before)
    assert not np.shares_memory(out, x)  # a new array even when nothing moved
    random_flip_rotate(x, np.random.default_rng(0))
    np.testing.assert_array_equal(x, before)


def test_rotation_fills_the_corners_with_the_background_and_keeps_the_centre():
    x = np.ones((8, 21, 21, 1), dtype=np.float32)
    rng = np.random.default_rng(1)
    out = random_flip_rotate(x, rng, flip=False, max_degrees=30.0, fill=-2.0)
    angles = np.random.default_rng(1).uniform(-30, 30, size=8)
    for image, angle in zip(out, angles):
        assert image.shape == (21, 21, 1)
        assert image[10, 10, 0] == pytest.approx(1.0)
        if abs(angle) > 10:
            assert image[0, 0, 0] == pytest.approx(-2.0)


def test_rotation_turns_a_bar():
    x = np.zeros((1, 21, 21), dtype=np.float32)
    x[0, 10, :] = 1.0  # a horizontal bar through the centre
    # With flip=False the angle is the generator's first draw from [-max_degrees, max_degrees].
    seed = next(s for s in range(100) if abs(np.random.default_rng(s).uniform(-90, 90)) > 75)
    out = random_flip_rotate(x, np.random.default_rng(seed), flip=False, max_degrees=90.0)[0]
    assert out[:, 10].sum() > 3 * out[10, :].sum()  # now nearly vertical
    assert out[10, 10] == pytest.approx(1.0)


def test_flip_rotate_rejects_a_single_image():
    with pytest.raises(ValueError, match="expected images"):
        random_flip_rotate(np.zeros((5, 5)), np.random.default_rng(0))


@pytest.mark.parametrize("shape", [(5, 19, 26), (5, 19, 26, 3)], ids=["greyscale", "three channels"])
def test_rotation_of_the_batch_equals_ndimage_rotate_image_by_image(shape):
    from scipy import ndimage

    rng = np.random.default_rng(3)
    x = rng.random(shape).astype(np.float32)
    out = random_flip_rotate(x, np.random.default_rng(8), flip=False, max_degrees=30.0, fill=0.25)
    angles = np.random.default_rng(8).uniform(-30.0, 30.0, size=5)
    expected = np.stack([
        ndimage.rotate(image, angle, axes=(1, 0), reshape=False, order=1, mode="constant", cval=0.25)
        for image, angle in zip(x, angles)
    ])
    np.testing.assert_allclose(out, expected, atol=1e-4)  # each channel rotated from itself
    assert not np.allclose(out, x, atol=1e-2)  # it did rotate


def test_sample_weights_come_in_the_batches_dtype():
    x, y = np.zeros((4, 2, 2, 1)), np.array([0, 1, 0, 1])
    batches = ArrayBatches(x, y, batch_size=2, dtype=np.float64, sample_weight=[1, 2, 3, 4], shuffle=False)
    (xb, yb, wb), _ = list(batches)
    assert xb.dtype == wb.dtype == np.float64
    assert wb.tolist() == [1.0, 2.0]


def test_epoch_e_is_the_permutation_drawn_from_seed_and_e_cut_into_sorted_batches():
    # The documented seeding, which lets train_mura resume an epoch's shuffle by setting .epoch.
    n, batch_size, seed = 23, 5, 7
    batches = ArrayBatches(np.zeros((n, 1)), np.arange(n), batch_size=batch_size, seed=seed)
    for epoch in range(3):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        expected = [np.sort(order[i : i + batch_size]).tolist() for i in range(0, n, batch_size)]
        assert [yb.tolist() for _, yb in batches] == expected  # sorted: a memory-mapped x is read front to back


def test_rotations_up_to_180_degrees_are_accepted():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    rotated = random_flip_rotate(x, np.random.default_rng(0), flip=False, max_degrees=180)
    assert rotated.shape == x.shape


def test_the_generator_advances_the_same_whatever_the_rotation_range():
    # Else the flips of every later batch would depend on max_degrees: 0 must draw its (unused) angles too.
    generators = [np.random.default_rng(3) for _ in range(2)]
    x = np.zeros((5, 4, 4, 1), np.float32)
    for rng, degrees in zip(generators, (0, 30)):
        random_flip_rotate(x, rng, max_degrees=degrees)
    assert generators[0].random() == generators[1].random()


@pytest.mark.parametrize("labels", [[0.0, 0.5, 1.0], [0.0, np.nan, 1.0]], ids=["fraction", "nan"])
def test_class_labels_that_are_not_whole_numbers_are_refused_not_truncated(labels):
    # As int64, 0.5 would silently become class 0, and NaN a huge negative number.
    with pytest.raises(ValueError, match="ArrayBatches: labels must be whole class indices"):
        ArrayBatches(np.zeros((3, 2)), np.array(labels))


@pytest.mark.parametrize("x", [np.ones((4, 2)) + 1j, np.array([["0.5", "1"]] * 4), np.array([[None, 1.0]] * 4)],
                         ids=["complex", "strings", "objects"])
def test_array_batches_refuse_inputs_that_are_no_real_numbers(x):
    with pytest.raises(ValueError, match=r"^ArrayBatches: x must hold real numbers, got dtype "):
        ArrayBatches(x, np.zeros(4, dtype=np.int64))


@pytest.mark.parametrize("x, y", [(np.array(1.0), np.zeros(1)), (np.ones((1, 2)), np.array(0))], ids=["x", "y"])
def test_array_batches_refuse_a_single_value_without_a_batch_axis(x, y):
    with pytest.raises(ValueError, match=r"^ArrayBatches: [xy] must have the samples along its first axis"):
        ArrayBatches(x, y)


def test_array_batches_take_an_array_like_without_a_numpy_dtype():
    class Lazy:  # a loader reading samples on demand, say
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return np.ones((len(np.arange(4)[index]), 2), np.float32)

    batches = ArrayBatches(Lazy(), np.zeros(4, dtype=np.int64), batch_size=2, shuffle=False)
    assert [xb.shape for xb, _ in batches] == [(2, 2), (2, 2)]
