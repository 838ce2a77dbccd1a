"""The U-Net of Rustemeyer et al. 2022 as a Keras functional model.

Source: Rustemeyer, Nitze, Grosse et al., "Tracking rapid permafrost thaw through time: exploring
the potential of convolutional neural network based models", IGARSS 2022, pp. 3838-3841,
doi:10.1109/IGARSS46834.2022.9884869. The paper describes the network in one paragraph: "5 levels
down and 5 up", two convolutions per level each followed by SELU, "alternating" kernel sizes that
grow with depth in the encoder and shrink in the decoder within 3..6, 2x2 max-pooling, 2x2
upsampling followed by a 2x2 convolution, skip concatenation, dropout and batch normalisation, and
a sigmoid output. How this module reads the parts the paper leaves open:

* **Levels.** ``levels`` counts 2x2 poolings: five encoder blocks, each followed by a pooling, a
  bottleneck block at 1/32 of the input size (2 x 2 for a 64-px tile), and five decoder blocks, each
  preceded by an upsampling. Inputs must therefore have H and W that are multiples of
  ``2 ** levels`` (32); :func:`input_multiple` reads it back from a model. H and W are free
  (input shape ``(None, None, C)``), so the same weights run on 64-px tiles and 1024-px windows.
* **Kernel sizes.** Each block has two convolutions whose kernel sizes differ by one (odd/even
  "alternation"). Encoder level ``k`` (0 = full resolution) uses ``(s, s + 1)`` with
  ``s = 3 + (2 * k) // (levels - 1)``; for five levels that is (3,4), (3,4), (4,5), (4,5), (5,6),
  growing with depth. The decoder block at level ``k`` mirrors it as ``(s + 1, s)``, so going up
  the sizes shrink: (6,5), (5,4), (5,4), (4,3), (4,3). The bottleneck uses (3, 3): on the 2 x 2 map
  of a 64-px training tile, a kernel larger than 3 has taps that only ever see the zero padding,
  never receive a gradient and keep their random initial values, which would then multiply real
  features when the model runs on larger windows. With (3, 3) every tap is trained (and the
  parameter count stays moderate). Pass ``kernel_sizes`` to choose otherwise.
* **Padding.** ``padding="same"`` everywhere. For an even kernel TensorFlow pads one pixel more at
  the bottom/right than at the top/left, so an even convolution shifts features by half a pixel;
  the following odd/even pair and the skip connections keep the map aligned to within one pixel.
  tf2onnx exports this as ``SAME_UPPER``, which matches TensorFlow exactly.
* **Activation, normalisation, dropout.** Convolution -> SELU (LeCun-normal initialisation, as
  SELU expects), twice; then batch normalisation and dropout once per block, at the block's end
  (before the pooling in the encoder). The upsampling is nearest-neighbour 2x2 followed by a 2x2
  convolution with SELU ("up-convolution"), then concatenation with the encoder block's output.
* **Width.** ``base_filters`` filters at level 0, doubling per level (``base * 2 ** k``), the
  bottleneck at ``base * 2 ** levels``. The paper gives no width; 16 is the default.
* **Output.** A 1x1 convolution to one channel with a sigmoid: the RTS probability per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

INPUT_NAME = "input"
"""Name of the model's input tensor (and of the ONNX input)."""

OUTPUT_NAME = "probability"
"""Name of the model's output layer (and of the ONNX output)."""

KernelPair = tuple[int, int]


def default_kernel_sizes(levels: int) -> tuple[list[KernelPair], KernelPair, list[KernelPair]]:
    """Kernel sizes (encoder per level, bottleneck, decoder per level), levels counted from full resolution.

    Encoder level ``k`` gets ``(s, s + 1)`` with ``s = 3 + (2 * k) // (levels - 1)`` (3..6 overall),
    the decoder mirrors it as ``(s + 1, s)``, the bottleneck gets (3, 3); see the module docstring.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    encoder = [(3 + (2 * k) // max(levels - 1, 1), 4 + (2 * k) // max(levels - 1, 1)) for k in range(levels)]
    decoder = [(b, a) for a, b in encoder]
    return encoder, (3, 3), decoder


def _conv(x: keras.KerasTensor, filters: int, kernel: int, name: str) -> keras.KerasTensor:
    return layers.Conv2D(
        filters, kernel, padding="same", activation="selu", kernel_initializer="lecun_normal", name=name
    )(x)


def _block(x: keras.KerasTensor, filters: int, kernels: KernelPair, dropout: float, name: str) -> keras.KerasTensor:
    x = _conv(x, filters, kernels[0], f"{name}_conv1")
    x = _conv(x, filters, kernels[1], f"{name}_conv2")
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def build_unet(
    in_channels: int = 5,
    base_filters: int = 16,
    levels: int = 5,
    dropout: float = 0.1,
    kernel_sizes: tuple[Sequence[KernelPair], KernelPair, Sequence[KernelPair]] | None = None,
    name: str = "rts_unet",
) -> keras.Model:
    """Build the U-Net (see the module docstring for the architecture and its reading of the paper).

    Parameters
    ----------
    in_channels : input layers (5: blue, green, red, NIR, slope).
    base_filters : filters of the full-resolution blocks; level ``k`` has ``base_filters * 2 ** k``.
    levels : number of 2x2 poolings (and upsamplings); H and W must be multiples of ``2 ** levels``.
    dropout : dropout rate at the end of every block (0 disables it).
    kernel_sizes : (encoder pairs per level, bottleneck pair, decoder pairs per level), levels
        ordered from full resolution down; default :func:`default_kernel_sizes`.
    name : the Keras model name.

    Returns
    -------
    An uncompiled ``keras.Model`` mapping ``[B, H, W, in_channels]`` to ``[B, H, W, 1]`` in (0, 1).

    """
    if base_filters < 1 or in_channels < 1:
        raise ValueError(f"base_filters and in_channels must be positive, got {base_filters}, {in_channels}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
    encoder_k, bottleneck_k, decoder_k = kernel_sizes or default_kernel_sizes(levels)
    if len(encoder_k) != levels or len(decoder_k) != levels:
        raise ValueError(f"kernel_sizes need {levels} encoder and {levels} decoder pairs")

    inputs = keras.Input(shape=(None, None, in_channels), name=INPUT_NAME)
    x = inputs
    skips = []
    for k in range(levels):
        x = _block(x, base_filters * 2**k, encoder_k[k], dropout, f"enc{k}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{k}_pool")(x)
    x = _block(x, base_filters * 2**levels, bottleneck_k, dropout, "bottleneck")
    for k in reversed(range(levels)):
        filters = base_filters * 2**k
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"dec{k}_up")(x)
        x = _conv(x, filters, 2, f"dec{k}_upconv")
        x = layers.Concatenate(name=f"dec{k}_concat")([skips[k], x])
        x = _block(x, filters, decoder_k[k], dropout, f"dec{k}")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name=name)


def input_multiple(model: keras.Model) -> int:
    """The number H and W of an input must be multiples of: ``2 ** (number of 2x2 poolings)``."""
    pools = sum(isinstance(layer, layers.MaxPooling2D) for layer in model.layers)
    return int(2**pools)


def kernel_size_table(model: keras.Model) -> dict[str, tuple[int, int]]:
    """Kernel size of every convolution, by layer name (for documentation and tests)."""
    return {layer.name: tuple(layer.kernel_size) for layer in model.layers if isinstance(layer, layers.Conv2D)}
