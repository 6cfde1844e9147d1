"""Save and load: one .npz without pickle, atomic writes, exact round trips."""
import gc
import json
import os
import re
import stat
import warnings

import numpy as np
import pytest
from model_fixtures import EpochRecorder, assert_weights_equal, tiny_cnn, tiny_images, weights_differ

from minidl import Sequential
from minidl.layers import Layer
from minidl.losses import CrossEntropy
from minidl.model import FILE_FORMAT
from minidl.optimizers import Adam


@pytest.fixture
def trained(tmp_path):
    """A CNN with Dropout trained a little with Adam, saved to ``model.npz``; and its data."""
    x, y = tiny_images(24, seed=1)
    model = tiny_cnn(dropout=0.3, optimizer=Adam(0.01))
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "model.npz"
    model.save(path)
    return model, path, x, y


def test_the_file_is_one_npz_of_plain_arrays_and_json(trained):
    model, path, _, _ = trained
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    assert all(a.dtype != object for a in arrays.values())
    architecture = json.loads(str(arrays["architecture"]))
    assert [spec["class"] for spec in architecture["layers"]] == [type(layer).__name__ for layer in model.layers]
    saved_params = [a for key, a in arrays.items() if key.startswith("param/")]
    assert len(saved_params) == len(model.get_weights())
    for weight in model.get_weights():
        assert any(a.shape == weight.shape and np.array_equal(a, weight) for a in saved_params)
    assert any(key.startswith("optimizer/") for key in arrays), "the optimiser state is saved"


def test_a_loaded_model_predicts_and_trains_exactly_like_the_original(trained):
    model, path, x, y = trained
    loaded = Sequential.load(path)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert type(loaded.optimizer) is Adam
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))

    # The next steps — Dropout masks, Adam's moments and step count — are identical.
    for xb, yb in [(x[:8], y[:8]), (x[8:16], y[8:16])]:
        assert loaded.train_on_batch(xb, yb) == model.train_on_batch(xb, yb)
        assert_weights_equal(loaded.get_weights(), model.get_weights())
    # And so is a whole epoch, shuffling included.
    a = model.fit(x, y, epochs=1, batch_size=5, verbose=0)
    b = loaded.fit(x, y, epochs=1, batch_size=5, verbose=0)
    assert a.history == b.history
    assert_weights_equal(loaded.get_weights(), model.get_weights())


def test_the_round_trip_is_needed_for_identical_training(trained):
    """Control for the test above: a fresh optimiser (no saved state) trains differently."""
    model, path, x, y = trained
    loaded = Sequential.load(path)
    loaded.compile(Adam(0.01))
    model.train_on_batch(x[:8], y[:8])
    loaded.train_on_batch(x[:8], y[:8])
    assert weights_differ(loaded.get_weights(), model.get_weights())


def test_a_lowered_learning_rate_and_the_loss_settings_survive(tmp_path):
    x, y = tiny_images(8)
    model = tiny_cnn()
    model.compile(Adam(0.01), loss=CrossEntropy(class_weight=[1.0, 3.0]))
    model.train_on_batch(x, y)
    model.optimizer.lr = 0.0005  # as ReduceLROnPlateau would
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz")
    assert loaded.optimizer.lr == 0.0005
    assert loaded.loss.get_config() == model.loss.get_config()
    assert loaded.train_on_batch(x, y) == model.train_on_batch(x, y)


def test_frozen_layers_stay_frozen_after_loading(tmp_path):
    x, y = tiny_images(16)
    model = tiny_cnn()
    model.layers[0].trainable = False
    model.compile(Adam(0.01))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.npz")

    loaded = Sequential.load(tmp_path / "m.npz")
    assert [layer.trainable for layer in loaded.layers] == [layer.trainable for layer in model.layers]
    conv_before = loaded.layers[0].params["W"].copy()
    head_before = loaded.layers[-2].params["W"].copy()
    loaded.fit(x, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(loaded.layers[0].params["W"], conv_before)
    assert not np.array_equal(loaded.layers[-2].params["W"], head_before)


def test_a_model_built_from_its_first_batch_round_trips(tmp_path):
    x, y = tiny_images(16)
    model = tiny_cnn(input_shape=None)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.train_on_batch(x, y) == model.train_on_batch(x, y)


# ---------------------------------------------------------------- no pickle
class Payload:
    """An object whose unpickling runs ``os.mkdir(flag)``: a stand-in for malicious code."""

    def __init__(self, flag):
        self.flag = str(flag)

    def __reduce__(self):
        return os.mkdir, (self.flag,)


@pytest.mark.parametrize("key", ["architecture", "param/0/W", "optimizer/extra"])
def test_a_file_holding_a_pickled_object_is_refused_without_running_it(trained, tmp_path, key):
    _, path, _, _ = trained
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    flag = tmp_path / "code-ran"
    arrays[key] = np.array([Payload(flag)], dtype=object)
    crafted = tmp_path / "crafted.npz"
    np.savez(crafted, **arrays)

    with pytest.raises(ValueError, match="pickle"):
        Sequential.load(crafted)
    assert not flag.exists(), "loading ran code from the file"

    # Control: the payload is real — unpickling the same entry does run it.
    with np.load(crafted, allow_pickle=True) as npz:
        npz[key]
    assert flag.exists()


def test_a_file_that_is_not_a_minidl_model_is_refused(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(ValueError, match=r"other\.npz has no architecture entry; it is not a minidl model file$"):
        Sequential.load(path)
    (tmp_path / "run.json").write_text('{"size": 64}')
    with pytest.raises(ValueError, match=r"run\.json is not an \.npz file"):
        Sequential.load(tmp_path / "run.json")


def test_a_file_that_cannot_be_opened_raises_the_os_error_of_its_kind_naming_the_file(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(FileNotFoundError) as err:
        Sequential.load(missing)
    assert str(err.value) == f"[Errno 2] Sequential.load: cannot read it: No such file or directory: '{missing}'"
    assert err.value.filename == str(missing)
    with pytest.raises(IsADirectoryError, match=f"Sequential.load: cannot read it: Is a directory: '{re.escape(str(tmp_path))}'"):
        Sequential.load(tmp_path)


def _tampered(path, tmp_path, change):
    """A copy of the model file at ``path`` with ``change(architecture, arrays)`` applied."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    architecture = json.loads(str(arrays["architecture"]))
    change(architecture, arrays)
    arrays["architecture"] = np.array(json.dumps(architecture))
    out = tmp_path / "tampered.npz"
    np.savez(out, **arrays)
    return out


def _set(path, value):
    def change(architecture, arrays):
        *keys, last = path
        target = architecture
        for key in keys:
            target = target[key]
        target[last] = value
    return change


def _replace_array(key, make):
    def change(architecture, arrays):
        arrays[key] = make(arrays[key])
    return change


def _drop(key):
    def change(architecture, arrays):
        del architecture[key]
    return change


def _add_array(key, value):
    def change(architecture, arrays):
        arrays[key] = value
    return change


def _restart_optimizer_with_short_moments(architecture, arrays):
    arrays["optimizer/t"] = np.array(0)
    arrays["optimizer/m/0"] = arrays["optimizer/m/0"][:-1]


@pytest.mark.parametrize("change, match", [
    (_drop("layers"), r"not a valid minidl model file \(KeyError: 'layers'\)"),
    (_drop("rng"), "KeyError: 'rng'"),
    (_set(["layers"], 3), "not a valid minidl model file"),
    (_set(["format"], 99), rf": file format 99, expected {FILE_FORMAT}"),
    (_set(["format"], str(FILE_FORMAT)), rf": file format '{FILE_FORMAT}', expected {FILE_FORMAT}"),
    (_drop("format"), rf": file format None, expected {FILE_FORMAT}"),
    (_set(["layers", 1, "class"], "Nope"), r": layer class 'Nope' is not defined"),
    (_set(["optimizer", "class"], "Nope"), r": unknown optimizer class 'Nope'"),
    (_set(["layers", 5, "config", "units"], -1), r": Dense: units must be a positive int, got -1"),
    (_set(["metrics"], ["kappa"]), r": Sequential.compile: unknown metrics \['kappa'\]"),
    (_set(["layers", 0, "trainable"], "no"), "'trainable' must be true or false"),
    (_set(["loss", "class"], "MeanSquaredError"), "only CrossEntropy"),
    (_set(["optimizer", "trainable_keys"], ["conv2d_1/W"]), "optimiser's state does not fit"),
    (_replace_array("param/0/W", lambda w: w.astype(np.int64)), r"param/0/W is int64, which the model.s float32 would not hold exactly$"),
    # int16 and bool cast "safely" into float32, but they are not a float type: not weights minidl wrote.
    (_replace_array("param/0/W", lambda w: w.astype(np.int16)), r"param/0/W is int16, which the model.s float32 would not hold exactly$"),
    (_replace_array("param/0/b", lambda b: b > 0), r"param/0/b is bool, which the model.s float32 would not hold exactly$"),
    (_replace_array("optimizer/m/0", lambda m: m[:-1]), "optimiser's state does not fit"),
    (_replace_array("param/0/b", lambda b: b[:1]), r"param/0/b.*wrong shape"),
    (_replace_array("param/0/W", lambda w: w[:1]), r"param/0/W.*wrong shape"),
    # The head not built from the file: built afresh, its stored weights would be dropped.
    (_set(["layers", 5, "built_for"], None), r": param/5/W, param/5/b belong\(s\) to nothing in the model it describes$"),
    (_add_array("zzz", np.zeros(3)), r": zzz belong\(s\) to nothing in the model it describes$"),
    (_set(["layers", 5, "built_for"], [0]), r": layer 5's built_for must be a tuple of positive ints"),
    (_set(["layers", 5, "built_for"], "12"), r": layer 5's built_for must be a tuple of positive ints"),
    (_set(["rng", "state", "state"], -1), r"not a valid minidl model file \(OverflowError: "),
    (_replace_array("param/0/W", lambda w: w.astype(np.float64) + 1e-12),
     r": param/0/W is float64, which the model.s float32 would not hold exactly$"),
    (_replace_array("param/5/b", lambda b: np.full_like(b, np.nan)), r": param/5/b holds NaN or infinity"),
    (_restart_optimizer_with_short_moments, "optimiser's state does not fit"),
    # Built layers in a model whose input_shape is not recorded: their state is checked all the same.
    (lambda architecture, arrays: (_set(["input_shape"], None)(architecture, arrays),
                                   _replace_array("optimizer/m/0", lambda m: m[:-1])(architecture, arrays)),
     "optimiser's state does not fit"),
], ids=["no layers", "no rng", "layers not a list", "unknown format", "format as text", "no format",
        "unknown layer class", "unknown optimiser", "bad layer setting", "unknown metric",
        "trainable not a bool", "unknown loss",
        "trainable keys changed", "integer weights", "int16 weights", "bool bias", "optimiser state of the wrong size",
        "bias that would broadcast", "kernel that would broadcast", "weights of a layer not built", "extra member",
        "built for no entries", "built for a string", "generator state out of range", "float64 weights",
        "NaN weights", "unstarted optimiser with moments of the wrong size",
        "moments of the wrong size in a model without input_shape"])
def test_a_damaged_or_edited_file_is_a_clear_error_naming_it(trained, tmp_path, change, match):
    _, path, _, _ = trained
    tampered = _tampered(path, tmp_path, change)
    with pytest.raises(ValueError, match=match) as error:
        Sequential.load(tampered)
    assert str(tampered) in str(error.value)


def test_weights_of_a_narrower_float_load_exactly_into_the_models_dtype(trained, tmp_path):
    model, path, x, _ = trained
    narrowed = _tampered(path, tmp_path, _replace_array("param/0/W", lambda w: w.astype(np.float16)))
    loaded = Sequential.load(narrowed)
    np.testing.assert_array_equal(loaded.layers[0].params["W"], model.layers[0].params["W"].astype(np.float16))
    assert loaded.layers[0].params["W"].dtype == np.float32


def test_a_member_stored_twice_is_refused_not_read_once(trained, tmp_path):
    import io
    import zipfile

    _, path, _, _ = trained
    doubled = tmp_path / "doubled.npz"
    with zipfile.ZipFile(path) as original, zipfile.ZipFile(doubled, "w") as copy:
        for member in original.namelist():
            copy.writestr(member, original.read(member))
        stored = io.BytesIO()
        np.save(stored, np.full(2, 123.0, dtype=np.float32))
        with pytest.warns(UserWarning, match="Duplicate name"):
            copy.writestr("param/5/b.npy", stored.getvalue())  # the head's bias again, other values
    with pytest.raises(ValueError, match=r"doubled.npz holds param/5/b more than once"):
        Sequential.load(doubled)


def test_json_nested_too_deep_is_a_damaged_file(trained, tmp_path):
    _, path, _, _ = trained
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["architecture"] = np.array("[" * 100_000 + "]" * 100_000)
    np.savez(tmp_path / "deep.npz", **arrays)
    with pytest.raises(ValueError, match=r"deep.npz is not a valid minidl model file \(RecursionError"):
        Sequential.load(tmp_path / "deep.npz")


@pytest.mark.parametrize("text", ["[]", "3", '"architecture"'])
def test_an_architecture_that_is_not_a_json_object_is_a_damaged_file(trained, tmp_path, text):
    _, path, _, _ = trained
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["architecture"] = np.array(text)
    np.savez(tmp_path / "odd.npz", **arrays)
    with pytest.raises(ValueError, match=r"odd.npz is not a valid minidl model file \(AttributeError"):
        Sequential.load(tmp_path / "odd.npz")


def test_load_takes_only_a_path():
    with pytest.raises(TypeError, match=r"^Sequential.load: path must be a file path \(str or os.PathLike\), got 1$"):
        Sequential.load(1)  # open(1) would have read standard input's descriptor, then closed it


def test_a_value_the_file_holds_that_a_constructor_refuses_keeps_the_constructors_error(trained, tmp_path):
    _, path, _, _ = trained
    with pytest.raises(ValueError) as error:
        Sequential.load(_tampered(path, tmp_path, _set(["layers", 5, "config", "units"], -1)))
    assert isinstance(error.value.__cause__, ValueError)
    assert str(error.value.__cause__) == "Dense: units must be a positive int, got -1"


def test_a_file_from_before_metrics_were_saved_loads_with_accuracy(tmp_path):
    x, y = tiny_images(8)
    model = tiny_cnn(compile=False)
    model.compile(Adam(0.01), metrics=())
    model.save(tmp_path / "m.npz")
    assert Sequential.load(tmp_path / "m.npz").metrics == ()  # control: a saved field is what is used
    loaded = Sequential.load(_tampered(tmp_path / "m.npz", tmp_path, _drop("metrics")))
    assert loaded.metrics == ("accuracy",)
    assert sorted(loaded.evaluate(x, y)) == ["accuracy", "loss"]


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", None], ids=["empty", "garbage", "truncated"])
def test_an_unreadable_file_is_a_clear_error_naming_it(trained, tmp_path, content):
    _, path, _, _ = trained
    broken = tmp_path / "broken.npz"
    broken.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2] if content is None else content)
    with pytest.raises(ValueError, match="broken.npz"):
        Sequential.load(broken)


@pytest.mark.parametrize("old_file, seed", [(False, 7), (True, 7), (False, None)],
                         ids=["this format", "without the seed sequence", "unseeded model"])
def test_a_layer_added_after_loading_gets_the_generator_it_would_have_got(tmp_path, old_file, seed):
    from minidl.layers import Dense

    original = Sequential([Dense(4)], input_shape=(3,), seed=seed)
    original.save(tmp_path / "m.npz")
    path = _tampered(tmp_path / "m.npz", tmp_path, _drop("seed_sequence")) if old_file else tmp_path / "m.npz"
    loaded = Sequential.load(path)
    original.add(Dense(2))
    loaded.add(Dense(2))
    assert_weights_equal(loaded.get_weights(), original.get_weights())


def test_loading_leaves_every_layer_generator_where_it_was_saved(tmp_path):
    # Building a layer with weights draws its initial weights from the layer's generator:
    # the saved state must be restored after that, or a layer that draws noise while
    # training (a custom one) would not continue its run, and save-load-save would differ.
    from minidl.layers import Dense, Dropout, Softmax

    original = Sequential([Dense(3), Dropout(0.5), Dense(2), Softmax()], input_shape=(4,), seed=0)
    original.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz")
    for before, after in zip(original.layers, loaded.layers):
        assert after.rng.bit_generator.state == before.rng.bit_generator.state, after.name
    loaded.save(tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() == (tmp_path / "m.npz").read_bytes()


# ----------------------------------------------------------- atomic writes
def _crash_midway(real_savez):
    def savez(file, **arrays):
        real_savez(file, **dict(list(arrays.items())[:2]))  # part of the file is written...
        raise OSError("disk full")  # ...then the write fails

    return savez


def test_a_failed_save_leaves_the_old_file_intact_and_no_temporary_file(trained, monkeypatch):
    model, path, x, y = trained
    old_bytes = path.read_bytes()
    old_listing = sorted(os.listdir(path.parent))
    model.train_on_batch(x[:8], y[:8])  # something new to save

    monkeypatch.setattr(np, "savez", _crash_midway(np.savez))
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    with pytest.raises(OSError, match="disk full"):
        model.save(path.parent / "new.npz")
    monkeypatch.undo()

    assert path.read_bytes() == old_bytes
    assert sorted(os.listdir(path.parent)) == old_listing
    Sequential.load(path)  # still a readable model


def test_a_model_with_a_loss_of_its_own_is_refused_before_anything_is_written(tmp_path):
    class HalfCrossEntropy:
        """A loss of the user's own: half the cross-entropy (load could not rebuild it)."""

        def __init__(self):
            self.inner = CrossEntropy()

        def batch_loss(self, *args, **kwargs):
            return self.inner.batch_loss(*args, **kwargs) / 2

        def backward(self):
            return self.inner.backward() / 2

    x, y = tiny_images(8)
    model = tiny_cnn(compile=False)
    model.compile(Adam(0.01), loss=HalfCrossEntropy())
    model.fit(x, y, epochs=1, verbose=0)  # it trains
    with pytest.raises(TypeError, match=r"^Sequential.save: the model's loss is a HalfCrossEntropy, and only "
                                        r"CrossEntropy is saved and restored; keep the weights with get_weights\(\)"):
        model.save(tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


class TimesFactor(Layer):
    """``y = factor * x``; a subclass's constructor sets ``factor``."""

    def forward(self, x, training=False):
        self.check_input(x)
        return x * self.factor

    def backward(self, dy):
        return dy * self.factor


def test_a_custom_layer_whose_config_leaves_out_a_constructor_argument_is_refused_before_anything_is_written(
        tmp_path):
    # Loaded as ScaledBy(**get_config()), it would silently take factor's default: another model.
    from minidl.layers import Dense, Softmax

    class ScaledBy(TimesFactor):
        def __init__(self, factor=2.0, name=None):
            super().__init__(name)
            self.factor = factor

    model = Sequential([Dense(4), ScaledBy(3.0, name="scaled"), Dense(2), Softmax()], input_shape=(5,), seed=0)
    model.compile(Adam(0.01))
    with pytest.raises(TypeError) as err:
        model.save(tmp_path / "m.npz")
    assert str(err.value) == ("Sequential.save: ScaledBy 'scaled': get_config() leaves out the constructor argument(s) "
                              "factor, so the layer would load without them; return them from get_config (see "
                              "docs/custom_layer.md)")
    assert list(tmp_path.iterdir()) == []

    ScaledBy.get_config = lambda self: {"factor": self.factor, "name": self.name}
    model.save(tmp_path / "m.npz")
    assert Sequential.load(tmp_path / "m.npz").layers[1].factor == 3.0
    # A from_config of the layer's own maps the config to the constructor: not checked.
    del ScaledBy.get_config
    ScaledBy.from_config = staticmethod(lambda config: ScaledBy(3.0, name=config["name"]))
    model.save(tmp_path / "m.npz")
    assert Sequential.load(tmp_path / "m.npz").layers[1].factor == 3.0


@pytest.mark.parametrize("change", ["freeze", "add"])
def test_a_model_whose_trainable_parameters_changed_since_training_is_refused_until_compiled_again(
        trained, tmp_path, change):
    # Its optimiser's state fits the old set: the file would not load (nor the model train on).
    from minidl.layers import Dense, Softmax

    model, path, x, _ = trained
    before = path.read_bytes()
    if change == "freeze":
        model.layers[0].trainable = False
    else:
        model.add(Dense(2))
        model.add(Softmax())
    with pytest.raises(RuntimeError, match=r"^Sequential.save: the set of trainable parameters changed since the "
                                           r"optimiser started .*call compile\(\) again to start a fresh optimiser, "
                                           r"then save$"):
        model.save(path)
    assert path.read_bytes() == before
    model.compile(Adam(0.01))
    model.save(path)
    np.testing.assert_array_equal(Sequential.load(path).predict(x), model.predict(x))


def test_a_model_that_froze_one_layer_and_unfroze_another_of_the_same_size_is_refused_until_compiled_again(
        tmp_path):
    # The same number of trainable parameters of the same shapes: the optimiser's state would fit
    # by shape, and apply the moments of one layer to the other without a word.
    from minidl.layers import Dense, Softmax

    x, y = np.random.default_rng(0).normal(size=(8, 3)), np.arange(8) % 2
    model = Sequential([Dense(3, name="a"), Dense(3, name="b"), Dense(2, name="head"), Softmax()],
                       input_shape=(3,), seed=0)
    model.layers[1].trainable = False
    model.compile(Adam(0.01))
    model.train_on_batch(x, y)
    model.layers[1].trainable, model.layers[0].trainable = True, False
    with pytest.raises(RuntimeError, match=r"^Sequential.save: the set of trainable parameters changed"):
        model.save(tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_a_loaded_model_keeps_the_trainable_set_its_optimiser_started_with(trained, tmp_path):
    # The file records which parameters the optimiser's state belongs to: freezing a layer of
    # the loaded model is refused by save as it would have been before saving.
    model, path, _, _ = trained
    with np.load(path, allow_pickle=False) as npz:
        saved = json.loads(str(npz["architecture"]))["optimizer"]["trainable_keys"]
    assert saved == ["conv/W", "conv/b", "head/W", "head/b"]
    loaded = Sequential.load(path)
    loaded.layers[0].trainable = False
    with pytest.raises(RuntimeError, match=r"^Sequential.save: the set of trainable parameters changed"):
        loaded.save(tmp_path / "again.npz")
    assert not (tmp_path / "again.npz").exists()


def test_a_custom_layer_whose_config_leaves_out_a_keyword_only_argument_is_refused(tmp_path):
    from minidl.layers import Dense

    class Scaled(TimesFactor):
        def __init__(self, *, factor=2.0, name=None):
            super().__init__(name)
            self.factor = factor

    model = Sequential([Dense(3), Scaled(factor=3.0, name="scaled")], input_shape=(4,), seed=0)
    with pytest.raises(TypeError, match=r"^Sequential.save: Scaled 'scaled': get_config\(\) leaves out the "
                                        r"constructor argument\(s\) factor,"):
        model.save(tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_a_layer_class_that_load_would_not_find_is_refused_before_anything_is_written(tmp_path):
    from minidl.layers import Dense, Layer

    class _Shift(Layer):  # a leading underscore marks a shared base: not registered for load
        def forward(self, x, training=False):
            self.check_input(x)
            return x + 1.0

        def backward(self, dy):
            return dy

    model = Sequential([Dense(3), _Shift(name="shift")], input_shape=(4,), seed=0)
    with pytest.raises(TypeError, match=r"^Sequential.save: _Shift 'shift': load would not find its class"):
        model.save(tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_a_layer_class_defined_again_as_a_notebook_cell_is_run_twice_saves_and_loads(tmp_path):
    from minidl.layers import Dense, Layer

    def define():
        class Doubled(Layer):
            def forward(self, x, training=False):
                self.check_input(x)
                return 2 * x

            def backward(self, dy):
                return 2 * dy
        return Doubled

    first = define()
    model = Sequential([Dense(3), first(name="doubled")], input_shape=(4,), seed=0)
    second = define()  # the same module and qualified name: it replaces the first
    assert second is not first
    model.save(tmp_path / "m.npz")
    assert type(Sequential.load(tmp_path / "m.npz").layers[1]) is second


def test_weights_that_are_not_finite_are_refused_by_save_as_by_load(trained):
    model, path, _, _ = trained
    before = path.read_bytes()
    model.layers[0].params["W"][0, 0, 0, 0] = np.inf
    with pytest.raises(FloatingPointError, match=r"^Sequential.save: Conv2D 'conv' holds NaN or infinity in its "
                                                 r"weights, .*training diverged \(try a lower learning rate\)"):
        model.save(path)
    assert path.read_bytes() == before


def test_a_config_json_cannot_hold_is_refused_naming_the_layer(tmp_path):
    from minidl.layers import Dense

    model = Sequential([Dense(3, name="head")], input_shape=(4,), seed=0)
    config = model.layers[0].get_config()
    model.layers[0].get_config = lambda: {**config, "units": {3}}
    with pytest.raises(TypeError, match=r"^Sequential.save: Dense 'head': get_config\(\) holds what JSON cannot "
                                        r"\(Object of type set is not JSON serializable\)"):
        model.save(tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where, error, message", [
    ("folder", ValueError, r"^Sequential.save: path '.*' is a folder; give the path of a file$"),
    ("", ValueError, r"^Sequential.save: path '' is empty; give the path of a file$"),
    (3, TypeError, r"^Sequential.save: path must be a file path \(str or os.PathLike\), got 3$"),
    ("new/", ValueError, r"^Sequential.save: path 'new/' is a folder; give the path of a file$"),
])
def test_save_refuses_what_is_not_the_path_of_a_file_before_writing(tmp_path, where, error, message):
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(error, match=message):
        tiny_cnn().save(folder if where == "folder" else where)
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []


def test_save_replaces_the_file_by_renaming_a_complete_new_one(trained):
    model, path, x, y = trained
    old_inode = os.stat(path).st_ino
    model.train_on_batch(x[:8], y[:8])
    model.save(path)
    assert os.stat(path).st_ino != old_inode, "the file must be replaced, not rewritten in place"
    assert sorted(os.listdir(path.parent)) == ["model.npz"]
    assert_weights_equal(Sequential.load(path).get_weights(), model.get_weights())


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask-022", "umask-002"])
def test_saved_files_get_the_usual_permissions(tmp_path, umask):
    """A temporary file made private (mode 0600) must not leave the saved model unreadable to others."""
    model = tiny_cnn()
    old = os.umask(umask)
    try:
        model.save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o666 & ~umask


def test_saving_during_training_does_not_change_the_run(tmp_path):
    """Saving mid-training (as ModelCheckpoint does) does not change the training run."""
    x, y = tiny_images(16)

    class SaveEachEpoch(EpochRecorder):
        def on_epoch_end(self, epoch, logs=None):
            self.model.save(tmp_path / f"e{epoch}.npz")
            super().on_epoch_end(epoch, logs)

    a, b = tiny_cnn(dropout=0.3), tiny_cnn(dropout=0.3)
    ha = a.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[SaveEachEpoch()])
    hb = b.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert ha.history == hb.history
    assert_weights_equal(a.get_weights(), b.get_weights())


def test_a_loaded_model_shares_one_scratch_block_like_the_original(tmp_path):
    from minidl.layers import Conv2D, Dense, Flatten, ReLU, Softmax

    model = Sequential([Conv2D(2, 3), ReLU(), Conv2D(2, 3), Flatten(), Dense(2), Softmax()],
                       input_shape=(7, 7, 1), seed=0)
    model.compile(Adam(), CrossEntropy())
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz")
    assert all(layer.scratch is loaded._scratch for layer in loaded.layers)
    assert loaded._scratch is not model._scratch


def test_an_array_declaring_more_than_the_memory_left_is_an_error_naming_the_file(trained, tmp_path):
    import io
    import zipfile

    _, path, _, _ = trained
    huge = tmp_path / "huge.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**40, 2**20)})
    with zipfile.ZipFile(path) as original, zipfile.ZipFile(huge, "w") as copy:
        for member in original.namelist():
            copy.writestr(member, original.read(member))
        copy.writestr("param/9/huge.npy", header.getvalue())  # a header alone, declaring 4 EiB
    with pytest.raises(MemoryError, match=r"^Sequential.load: .*huge.npz holds an array larger than the memory left"):
        Sequential.load(huge)


def test_a_file_that_is_no_zip_archive_is_closed_when_refused(tmp_path):
    path = tmp_path / "half.npz"
    tiny_cnn().save(path)
    path.write_bytes(path.read_bytes()[:200])  # the zip's directory, at its end, is gone
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(ValueError, match="is not a zip file|cannot read"):
            Sequential.load(path)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_save_creates_missing_folders_and_keeps_the_name_as_given(tmp_path):
    model = tiny_cnn()
    path = tmp_path / "runs" / "first" / "model.h5"
    model.save(path)
    assert os.listdir(path.parent) == ["model.h5"]
    assert_weights_equal(Sequential.load(path).get_weights(), model.get_weights())


def test_a_compressed_file_is_refused_naming_its_compressed_entries(trained, tmp_path):
    model, path, x, _ = trained
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    np.savez_compressed(tmp_path / "compressed.npz", **arrays)  # the same model, every member deflated
    with pytest.raises(ValueError, match=r"refusing .*compressed.npz: it holds compressed entries \(architecture.npy, "):
        Sequential.load(tmp_path / "compressed.npz")


def test_a_zip_bomb_is_refused_before_it_is_inflated(trained, tmp_path):
    import io
    import tracemalloc
    import zipfile

    _, path, _, _ = trained
    bomb = tmp_path / "bomb.npz"
    zeros = io.BytesIO()
    np.save(zeros, np.zeros(2**24, dtype=np.float32))  # 64 MiB, deflated to about 65 KiB
    with zipfile.ZipFile(path) as original, zipfile.ZipFile(bomb, "w") as copy:
        for member in original.namelist():
            copy.writestr(member, original.read(member))
        copy.writestr("param/9/zeros.npy", zeros.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"compressed entries \(param/9/zeros.npy\)"):
            Sequential.load(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**24  # nothing near the 64 MiB it inflates to was allocated


@pytest.mark.parametrize("method", ["ZIP_DEFLATED", "ZIP_BZIP2", "ZIP_LZMA"])
def test_every_kind_of_compression_is_refused(trained, tmp_path, method):
    import zipfile

    _, path, _, _ = trained
    packed = tmp_path / "packed.npz"
    with zipfile.ZipFile(path) as original, zipfile.ZipFile(packed, "w") as copy:
        for member in original.namelist():
            copy.writestr(member, original.read(member), compress_type=getattr(zipfile, method))
    with pytest.raises(ValueError, match=r"it holds compressed entries \(architecture.npy, "):
        Sequential.load(packed)
