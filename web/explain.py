"""What each panel shows and how to read it, in the words the pages show next to it.

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


class Panel(NamedTuple):
    """Any other panel: the sentence always shown, and the "how to read this" paragraphs."""

    sentence: str
    how: tuple[str, ...]


PANELS: dict[str, Panel] = {
    "runs": Panel(
        "Every training run in this store, newest first: tick two or more and press Compare to "
        "see what differs between them layer by layer, or tick one to compare its epochs.",
        (
            "Status says whether the run is still being written (running), ended normally "
            "(finished), raised an exception (failed) or was found dead (crashed); degraded "
            "means some tracking data was dropped, never the training itself.",
            "Health is the worst flag any layer shows at the run's last recorded step: ok, "
            "warning (for example weights that stopped changing) or error (dead ReLUs, NaN/Inf, "
            "exploding gradients). Open the run to see which layer and why.",
            "Final loss is the last value of the metric named loss. The columns after Tags are "
            "the config values given to tracker.init(config=...), one column per key, so runs "
            "that differ in one setting line up. Click a column title to sort; type in Filter "
            "to keep runs whose name, project, status, tag or config contains every word.",
        ),
    ),
    "diagnosis": Panel(
        "What tracker found wrong in this run, worst and earliest first: for each problem, the "
        "layer, the steps it covers, what it means and what to try.",
        (
            "The diagnosis reads the statistics stored for every layer and step (no tensor is "
            "recomputed) and looks for NaN/Inf, dead ReLU units, saturated sigmoid/tanh outputs, "
            "weight gradients that are exactly zero, vanishing or exploding gradient norms, "
            "updates that are far too small or too large for the weights (lr·|g|/|w|), and "
            "BatchNorm statistics that never settle.",
            "Errors (✖) stop a layer from learning; warnings (⚠) slow it down or hint at "
            "trouble to come. Fix the earliest error first: a dead ReLU starves every layer "
            "before it of gradient, so their no-gradient findings usually go away with it. The "
            "same findings mark the rows of the layer table below, and `tracker diagnose RUN` "
            "prints them in a terminal.",
        ),
    ),
    "metrics": Panel(
        "Every scalar the script logged (loss, accuracy, …) against the training step or the "
        "epoch; a loss that stays flat or jumps up means training is not working.",
        (
            "Long runs are cut into about 1,000 buckets of equal step span on the server: the "
            "line is each bucket's mean and the light band its minimum to maximum, so a single "
            "spike stays visible however long the run. Zoom in (drag on the plot) to see fewer "
            "steps in more detail; double-click to zoom out.",
            "On the epoch axis, 2.5 means half way through epoch 2 (epochs as given to "
            "run.log(epoch=...)), so runs with different batch sizes line up by data seen. "
            "Faint vertical lines mark where each epoch starts on the step axis.",
        ),
    ),
    "flow": Panel(
        "How big each layer's weight gradient is, from the first layer (top) to the last, over "
        "training: a dark band is a layer whose gradient vanished (it stops learning), a bright "
        "spot an exploding gradient.",
        (
            "Gradient norm |g| is the L2 norm of dLoss/d(weight) of each layer's main parameter. "
            "Backpropagation multiplies by every layer's weights and activation derivatives on "
            "the way down, so in a deep or badly initialised network the norm shrinks (vanishes) "
            "or grows (explodes) from the last layer towards the first. Colours are on a log "
            "scale: one step of the colour bar is a factor of 10.",
            "|g|/|w| divides it by the weight's norm. It stands in for the size of an update "
            "relative to the weights, which is what decides how fast a layer learns; when the "
            "config has lr it is multiplied by it and labelled update/weight ≈ lr·|g|/|w|. That "
            "is exact for plain SGD; momentum and Adam rescale the update, so read it as a "
            "guide. Around 1e-3 is the usual rule of thumb; far below, the layer barely "
            "changes; near 1, each step rewrites the weights.",
            "“Line per epoch” shows one line per epoch (the mean over its steps) against depth, "
            "early epochs dark, late ones light: lines that drop steeply to the left are "
            "vanishing gradients.",
        ),
    ),
    "hist_time": Panel(
        "How the distribution of this quantity's values moved during training: one column per "
        "recorded step, one row per power-of-two range of values, brighter where more values are.",
        (
            "Rows are the same shared bins as the histogram above: negative values at the "
            "bottom, exact zeros in the middle (0), positive ones at the top, each row twice the "
            "size of the one nearer 0. The colour is the share of the tensor's values in that "
            "range at that step, on a log scale. A band drifting towards 0 means values "
            "shrinking (vanishing gradients, dying activations); a band moving away from 0 "
            "means values growing; everything collapsing into the 0 row is a dead layer.",
            "Long runs are averaged over buckets of steps on the server (see the axis title). "
            "The dashed line is the step shown in the panels above.",
        ),
    ),
    "probe": Panel(
        "Training batch: the examples of that step's batch, different at every step. Probe "
        "inputs: the same fixed examples at every snapshot step (run.watch(probe=...)), so one "
        "picture can be watched as training changes it.",
        (),
    ),
    "differ": Panel(
        "The layers whose statistic differs most between the runs, most different first; click "
        "a row to look at that layer below.",
        (
            "For each layer the chosen quantity's size (std of activations, L2 norm of "
            "gradients and weights) is read at every step both runs recorded (or every epoch, "
            "or every step since the epoch began), and the score is the mean distance between "
            "the runs in orders of magnitude: 1 means the two are typically 10 times apart, 0 "
            "identical. Exact zeros, like a dead layer's output, count as 1e-12, so a layer that "
            "went dead scores about 12 for the steps it was dead.",
            "“Apart from” is the first aligned step where the two were 10 times apart or more; "
            "the layer where a problem starts is usually the earliest, and near-equal scores are "
            "listed in model order for that reason. The flags columns show each run's health "
            "flags for the layer.",
        ),
    ),
    "curves": Panel(
        "The chosen statistic of one layer in every run, on one axis: where the lines part is "
        "where the runs start to behave differently.",
        (
            "Each line is the mean over buckets of steps (about 1,000 per run) and its light band "
            "the minimum to maximum in the bucket, so spikes survive downsampling. Use the log "
            "axis for norms and std: vanishing and exploding values are orders of magnitude "
            "apart. The dashed line is the moment shown in the histograms and snapshots below.",
        ),
    ),
    "hist_overlay": Panel(
        "The distribution of this layer's values at the same moment in every run, on the shared "
        "power-of-two bins: each bar is a run's share of values in that range.",
        (
            "Every run's histogram uses the same bin edges ([2^k, 2^(k+1)), mirrored for "
            "negatives, one bin for exact 0), so the bars line up exactly and can be subtracted "
            "bin for bin. Shares rather than counts make runs with different batch sizes "
            "comparable. A tall 0 bar in one run only is a layer whose outputs or gradients "
            "went to zero.",
        ),
    ),
    "hist_diff": Panel(
        "Each run's share of values per bin minus the reference run's (the first one): above "
        "zero, the other run has more values in that range; below, fewer.",
        (
            "Because the bins are shared, this difference is exact, not resampled. The bars of "
            "each difference add up to 0: values that left one range went to another. Look for "
            "mass moving towards 0 (shrinking values) or away from it (growing values).",
        ),
    ),
    "snapshots": Panel(
        "The recorded tensor of each run at the same moment, side by side with the same colour "
        "range, and the difference image: the other run minus the reference, white where equal.",
        (
            "When every run recorded probe inputs the images use them, so both runs saw exactly "
            "the same examples and any difference comes from the networks; otherwise they show "
            "each run's training batch at that step, which is the same data only if the runs "
            "shuffled identically (same seed and batch size).",
            "In the difference image red means the other run's value is larger, blue smaller, "
            "on a colour scale symmetric around 0. Weights are always comparable element by "
            "element; activations only when the inputs are the same.",
        ),
    ),
}
