"""What each recorded quantity means, in the words the layer page shows next to its panel.

Beginners ask what "activations", "activation gradients", "weights" and "weight gradients" are
(seeds 000-002); every panel answers in one sentence and, on request, one paragraph.
"""

from __future__ import annotations

from typing import NamedTuple


class Quantity(NamedTuple):
    """One panel of the layer explorer."""

    key: str  # the API's quantity name
    title: str
    sentence: str  # what the panel shows and how to read it, always visible
    how: str  # the longer "how to read this" paragraph
    over_time: str  # what the small chart under the histogram plots


QUANTITIES = (
    Quantity(
        "activation",
        "Activations",
        (
            "What this layer outputs for the chosen input sample: one small image per channel for "
            "convolutions, samples × features for dense layers; yellow is large, dark purple small."
        ),
        (
            "“Activation” here means the layer's output, whatever kind of layer it is (not only "
            "ReLU). For a convolution each small square is one output channel (a feature map) for "
            "the selected input, laid out left to right, top to bottom; for a dense layer each "
            "row is one sample of the recorded batch and each column one output unit. Early "
            "convolution layers look like filtered versions of the input image (edges, strokes); "
            "deeper layers are coarser and more abstract. After a ReLU, channels that are "
            "completely dark (all zeros) for every sample are dead units. Values that grow by "
            "orders of magnitude from step to step mean the network is blowing up."
        ),
        (
            "Over time: mean and standard deviation of the whole output batch at every recorded "
            "step."
        ),
    ),
    Quantity(
        "activation_grad",
        "Activation gradients",
        (
            "How much the loss would change if each output value changed (dLoss/d output); red "
            "and blue are the two directions, and all near zero means the layers before this one "
            "are not learning."
        ),
        (
            "Backpropagation sends a signal from the loss back through the network: for every "
            "value this layer output, the gradient says how strongly and in which direction the "
            "loss wants it to move. It is drawn exactly like the activations, pixel for pixel. "
            "White is zero; red is positive (the loss goes up if the value goes up) and blue "
            "negative. Patches of exact zero are normal after ReLU (units that were off pass no "
            "gradient back) and after max-pooling (only the maximum passes). If this panel is "
            "white at every step, the gradient has vanished and earlier layers receive no "
            "learning signal; if its range grows by orders of magnitude, gradients are exploding."
        ),
        "Over time: L2 norm (overall size) of the gradient at every recorded step.",
    ),
    Quantity(
        "weight",
        "Weights",
        (
            "The numbers this layer has learned: for a convolution one small k×k kernel per "
            "output filter (row) and input channel (column), for a dense layer the outputs × "
            "inputs matrix; red positive, blue negative."
        ),
        (
            "A convolution's weight is a stack of small kernels: each row of little squares is "
            "one output filter, each column one input channel, and each square shows the k×k "
            "pattern that filter looks for in that channel. A dense (Linear) layer's weight is "
            "one matrix, rows = outputs, columns = inputs. White is zero. At initialisation the "
            "weights look like noise; during training, first-layer filters often turn into smooth "
            "strokes or blobs. Weights that grow very large usually mean the learning rate is too "
            "high. Use the Parameter selector to see the bias instead."
        ),
        "Over time: L2 norm of this parameter at every recorded step.",
    ),
    Quantity(
        "weight_grad",
        "Weight gradients",
        (
            "How the loss would change if each weight changed, drawn like the weights; the "
            "optimiser moves every weight against this, so all zero means this layer has stopped "
            "learning."
        ),
        (
            "Each pixel is the gradient of the loss with respect to the weight drawn at the same "
            "place in the Weights panel, for one batch (so it looks noisy from step to step; that "
            "is normal). Plain SGD changes every weight by −learning rate × this value. Compare "
            "the sizes printed above the two panels: a gradient thousands of times smaller than "
            "the weights means the layer is barely changing; one comparable to the weights means "
            "the updates are violently large. An all-white panel means no gradient reaches this "
            "layer, for example because the ReLUs after it are dead."
        ),
        "Over time: L2 norm of this parameter's gradient at every recorded step.",
    ),
)
