"""Structure of the U-Net: levels, kernel sizes, parameter count, dynamic input size, output range."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from rtstrain.unet import build_unet, default_kernel_sizes, input_multiple, kernel_size_table


@pytest.fixture(scope="module")
def unet16() -> keras.Model:
    return build_unet(in_channels=5, base_filters=16, levels=5, dropout=0.1)


def test_levels_pooling_and_input_multiple(unet16: keras.Model) -> None:
    types = [type(layer).__name__ for layer in unet16.layers]
    assert types.count("MaxPooling2D") == 5 and types.count("UpSampling2D") == 5
    assert types.count("Concatenate") == 5
    assert types.count("BatchNormalization") == 11 and types.count("Dropout") == 11  # 5 + bottleneck + 5
    assert input_multiple(unet16) == 32
    assert unet16.input_shape == (None, None, None, 5)


def test_kernel_sizes_alternate_grow_down_and_shrink_up(unet16: keras.Model) -> None:
    table = kernel_size_table(unet16)
    enc = [(table[f"enc{k}_conv1"][0], table[f"enc{k}_conv2"][0]) for k in range(5)]
    dec = [(table[f"dec{k}_conv1"][0], table[f"dec{k}_conv2"][0]) for k in reversed(range(5))]
    assert enc == [(3, 4), (3, 4), (4, 5), (4, 5), (5, 6)]
    assert dec == [(6, 5), (5, 4), (5, 4), (4, 3), (4, 3)]
    assert (table["bottleneck_conv1"], table["bottleneck_conv2"]) == ((3, 3), (3, 3))
    assert all(table[f"dec{k}_upconv"] == (2, 2) for k in range(5))
    assert table["probability"] == (1, 1)
    assert all(b - a == 1 for a, b in enc)  # the two convolutions of a block alternate odd/even
    smalls = [a for a, _ in enc]
    assert smalls == sorted(smalls) and min(smalls) == 3 and max(b for _, b in enc) == 6
    assert default_kernel_sizes(3)[0] == [(3, 4), (4, 5), (5, 6)]


def test_selu_everywhere_and_sigmoid_output(unet16: keras.Model) -> None:
    convs = [layer for layer in unet16.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(c.activation.__name__ == "selu" for c in convs[:-1])
    assert convs[-1].activation.__name__ == "sigmoid"


def test_parameter_count(unet16: keras.Model) -> None:
    assert unet16.count_params() == 15_888_145
    assert build_unet(base_filters=4).count_params() == 994_933


@pytest.mark.parametrize("size", [64, 128])
def test_dynamic_sizes_and_probability_range(size: int) -> None:
    model = build_unet(base_filters=4)
    x = np.random.default_rng(size).random((2, size, size, 5), dtype=np.float32)
    out = np.asarray(model(x, training=False))
    assert out.shape == (2, size, size, 1)
    assert (out > 0).all() and (out < 1).all()


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="dropout"):
        build_unet(dropout=1.0)
    with pytest.raises(ValueError, match="kernel_sizes"):
        build_unet(levels=2, kernel_sizes=([(3, 4)], (3, 3), [(4, 3)]))
