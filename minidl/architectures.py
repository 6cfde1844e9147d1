"""Ready-made layer stacks: minidl's baseline CNN and a VGG16-style network.

Each function returns a fresh list of layers for ``Sequential``. A network is
a convolutional *base* (convolutions and poolings, ending in ``Flatten``) and
a dense *head* (thesis section 2.4.5); transfer learning keeps a trained base
and trains a new head (``split_base``, ``classifier_head``).
"""
from .layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Softmax
from .utils import is_int


def classifier_head(units=128, dropout=0.5, classes=2):
    """Dense(units)-ReLU-Dropout(dropout)-Dense(classes)-Softmax, without the Dropout when ``dropout`` is 0."""
    head = [Dense(units), ReLU()]
    if dropout:
        head.append(Dropout(dropout))
    return head + [Dense(classes), Softmax()]


def baseline_cnn(dropout=0.5, classes=2):
    """The reference MURA CNN: three Conv3x3-ReLU-MaxPool2 blocks (32, 64, 128 filters), then the head.

    Every convolution pads "same", so each block halves the image: an S x S
    input leaves the base as (S/8) x (S/8) x 128 features.

    The layout is minidl's own: the thesis leaves its from-scratch model
    unspecified (section 4.3 is a placeholder). It has the shape section 2.4.5
    describes (convolutions and poolings, Flatten, one hidden dense layer,
    softmax) and serves as the baseline that section 5.1 plans.
    """
    base = []
    for filters in (32, 64, 128):
        base += [Conv2D(filters, 3, padding="same"), ReLU(), MaxPool2D(2)]
    return base + [Flatten()] + classifier_head(128, dropout, classes)


_VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def vgg16(dropout=0.5, classes=2, width_divisor=1, head_units=256):
    """The convolutional layout of VGG16 (Simonyan & Zisserman, 2015), the thesis's comparison model.

    Five blocks of 2, 2, 3, 3, 3 Conv3x3("same")-ReLU layers with 64, 128,
    256, 512, 512 filters, each block ending in MaxPool2, then a dense head.
    ``width_divisor`` divides every filter count (VGG16 itself is 1; 8 makes a
    network that trains on a laptop CPU). The input must be at least 32 x 32
    (five halvings). No pretrained ImageNet weights come with it: nothing is
    downloaded; ``--init-from`` in the MURA example reuses a base you trained.
    """
    if not is_int(width_divisor) or width_divisor < 1:
        raise ValueError(f"vgg16: width_divisor must be an int of at least 1, got {width_divisor!r}")
    base = []
    for filters, convolutions in _VGG16_BLOCKS:
        width = max(1, filters // width_divisor)
        base += [layer for _ in range(convolutions) for layer in (Conv2D(width, 3, padding="same"), ReLU())]
        base.append(MaxPool2D(2))
    return base + [Flatten()] + classifier_head(head_units, dropout, classes)


ARCHITECTURES = {"baseline": baseline_cnn, "vgg16": vgg16}


def split_base(layers):
    """``(base, head)``: the layers up to and including the first ``Flatten``, and the rest."""
    for index, layer in enumerate(layers):
        if isinstance(layer, Flatten):
            return list(layers[: index + 1]), list(layers[index + 1 :])
    raise ValueError("split_base: the network has no Flatten layer separating a convolutional base from its head")
