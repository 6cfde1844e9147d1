"""The ready-made networks: their layouts, and their arguments checked."""
import pytest

from minidl.architectures import ARCHITECTURES, baseline_cnn, classifier_head, split_base, vgg16
from minidl.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Softmax


def test_vgg16_has_thirteen_same_padded_convolutions_in_five_blocks_of_divided_width():
    layers = vgg16(width_divisor=8)
    convolutions = [layer for layer in layers if isinstance(layer, Conv2D)]
    assert [c.filters for c in convolutions] == [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    assert all(c.padding == "same" and c.kernel_size == (3, 3) for c in convolutions)
    assert sum(isinstance(layer, MaxPool2D) for layer in layers) == 5
    base, head = split_base(layers)
    assert isinstance(base[-1], Flatten) and isinstance(head[-1], Softmax)


@pytest.mark.parametrize("divisor", [0, 1.5, "8"])
def test_vgg16_refuses_a_width_divisor_that_is_not_a_positive_int(divisor):
    with pytest.raises(ValueError, match=f"vgg16: width_divisor must be an int of at least 1, got {divisor!r}"):
        vgg16(width_divisor=divisor)


def test_the_baseline_is_the_reference_network_of_the_benchmarks():
    kinds = [type(layer) for layer in baseline_cnn()]
    assert kinds == [Conv2D, ReLU, MaxPool2D] * 3 + [Flatten, Dense, ReLU, Dropout, Dense, Softmax]
    convolutions = [layer for layer in baseline_cnn() if isinstance(layer, Conv2D)]
    assert [(c.filters, c.kernel_size, c.padding) for c in convolutions] == [
        (32, (3, 3), "same"), (64, (3, 3), "same"), (128, (3, 3), "same")]  # each block halves the image
    assert [type(layer) for layer in classifier_head()] == [Dense, ReLU, Dropout, Dense, Softmax]


def dense_units(layers):
    return [layer.units for layer in layers if isinstance(layer, Dense)]


def dropout_rates(layers):
    return [layer.rate for layer in layers if isinstance(layer, Dropout)]


def test_the_head_has_its_units_one_output_per_class_and_no_dropout_layer_for_a_rate_of_0():
    assert [type(layer) for layer in classifier_head(64, 0.5, 5)] == [Dense, ReLU, Dropout, Dense, Softmax]
    assert dense_units(classifier_head(64, 0.5, 5)) == [64, 5]
    assert [type(layer) for layer in classifier_head(dropout=0)] == [Dense, ReLU, Dense, Softmax]
    assert dropout_rates(baseline_cnn(dropout=0)) == dropout_rates(vgg16(dropout=0.0, width_divisor=8)) == []


def test_the_networks_pass_their_arguments_on_to_their_heads_with_the_documented_defaults():
    assert (dense_units(baseline_cnn()), dropout_rates(baseline_cnn())) == ([128, 2], [0.5])
    assert (dense_units(baseline_cnn(dropout=0.3, classes=7)), dropout_rates(baseline_cnn(dropout=0.3))) == (
        [128, 7], [0.3])
    assert (dense_units(vgg16(width_divisor=8)), dropout_rates(vgg16(width_divisor=8))) == ([256, 2], [0.5])
    layers = vgg16(dropout=0.2, classes=3, width_divisor=8, head_units=32)
    assert (dense_units(layers), dropout_rates(layers)) == ([32, 3], [0.2])


def test_vgg16_keeps_at_least_one_filter_whatever_the_divisor():
    assert [c.filters for c in vgg16(width_divisor=1024) if isinstance(c, Conv2D)] == [1] * 13


def test_the_registry_maps_each_name_to_its_network():
    assert ARCHITECTURES == {"baseline": baseline_cnn, "vgg16": vgg16}
