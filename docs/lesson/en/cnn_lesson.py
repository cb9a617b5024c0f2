# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A convolutional network in PyTorch
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/cnnlab/cnnlab/blob/main/docs/lesson/en/cnn_lesson.ipynb)
#
# This notebook walks through the chapter step by step, with code you can run:
#
# 1. **Convolution and pooling**: a convolution worked by hand, what each argument of
#    `nn.Conv2d` and `nn.MaxPool2d` does, and how to predict the size of the output.
# 2. **torchvision**: datasets, reading images (your own picture, prepared the way MNIST was),
#    transforms and the classic models.
# 3. **LeNet-5**: the network written as a class, layer by layer, and how it differs from the 1998 original.
# 4. **Training** with pytorch-ignite, with the loop in plain sight, and then the same thing
#    with a single `cnnlab` call (after looking for a learning rate with `cnnlab.lr_find`).
# 5. **Analysing** the best model on the test set: report, confusion matrix, mistakes, calibration;
#    and inside the network: every layer's maps for one picture, a kernel's arithmetic, which pixels decided.
# 6. **Where to go next**: augmentation, pretrained models and the command line.
#
# Each section ends with short exercises: **predict** the answer first, **then run** the code;
# the solutions are folded away.
#
# It runs on Colab, on a laptop (CPU is enough: a few minutes) or on a GPU.

# %% [markdown]
# ## 0. Setup
#
# The first cell installs what is missing, and only when it is missing (on Colab: cnnlab and
# pytorch-ignite; torch is already there and is **never** reinstalled), then picks the device:
# a CUDA GPU, Apple's MPS, or the CPU.

# %%
import importlib.util
import sys

if importlib.util.find_spec("cnnlab") is None or importlib.util.find_spec("ignite") is None:
    import torch
    import torchvision

    # Pin the torch that is already installed, so pip keeps it instead of downloading another.
    keep = [f"torch=={torch.__version__.split('+')[0]}", f"torchvision=={torchvision.__version__.split('+')[0]}"]
    # %pip install --quiet "cnnlab @ git+https://github.com/cnnlab/cnnlab" {" ".join(keep)}

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
print("torch", torch.__version__, "| device:", DEVICE)

# %% [markdown]
# **Settings.**
#
# - `DATA_DIR`: where MNIST lives, found the way cnnlab finds it: the environment variable
#   `CNNLAB_DATA_DIR` if set, else cnnlab's data folder (`~/.cache/cnnlab/data`). MNIST
#   (about 12 MB) is downloaded there the first time, then read from disk.
# - `QUICK = True` (the environment variable `CNNLAB_LESSON_QUICK=1`, which the tests and the
#   docs build set) trains for a single epoch on a few thousand images, just to check that
#   everything runs. With `QUICK = False` you follow the lesson: 50,000 training images,
#   10,000 validation images, 5 epochs.
# - `RUNS` is where the trainings write their checkpoints; `IMAGES` holds the photos of
#   digits used in section 2.2 (downloaded when this notebook is not inside its repository).
# - `CNNLAB_LANG`: the language of what cnnlab prints and draws: the training log, the tables,
#   the test report and every figure. This notebook asks for English (`"es"` gives Spanish) with
#   an ordinary `os.environ` line in the cell below: it sets an environment variable of this
#   notebook's own Python process (the kernel), from that line on, and nothing outside it. Every
#   call also takes `lang="en"` or `lang="es"` for that call alone.

# %%
import os
from pathlib import Path

from cnnlab.data.tensors import resolve_data_dir

os.environ["CNNLAB_LANG"] = "en"  # the language of what cnnlab prints and draws in this notebook

DATA_DIR = resolve_data_dir(None)  # $CNNLAB_DATA_DIR, else ~/.cache/cnnlab/data
QUICK = os.environ.get("CNNLAB_LESSON_QUICK", "0") == "1"
EPOCHS = 1 if QUICK else 5
SUBSET = 3000 if QUICK else None  # training images (None: the lesson's 50k/10k split)
RUNS = Path(os.environ.get("CNNLAB_LESSON_RUNS", "runs"))

DIGITS = ["digit_0.jpg", "digit_1.jpg", "digit_2.jpg", "digit_3.jpg", "digit_3_chalk.jpg", "digit_4.jpg",
          "digit_5.jpg", "digit_6.jpg", "digit_7.jpg", "digit_7_transparent.png", "digit_8.jpg", "digit_9.jpg"]
IMAGES = Path("../images")  # beside the notebooks in the repository
if not all((IMAGES / name).is_file() for name in DIGITS):  # a lone copy (Colab): fetch them once
    import urllib.request

    IMAGES = Path("lesson_images")
    IMAGES.mkdir(exist_ok=True)
    for name in DIGITS:
        if not (IMAGES / name).is_file():
            urllib.request.urlretrieve(
                f"https://raw.githubusercontent.com/cnnlab/cnnlab/main/docs/lesson/images/{name}", IMAGES / name)

print("data:", DATA_DIR, "| quick mode:", QUICK, "| epochs:", EPOCHS)

# %%
import math

import matplotlib.pyplot as plt
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0);  # the same random numbers on every run

# %% [markdown]
# ## 1. Convolution and pooling
#
# ### 1.1 A convolution by hand
#
# A 2-D convolution slides a small filter (a *kernel*) over the image. At every position it
# multiplies the filter by the patch underneath, element by element, and adds everything up
# (plus a bias) into one number. A 4x4 input and a 2x2 kernel, by hand:

# %%
image = torch.tensor([[1., 2., 0., 1.],
                      [0., 1., 3., 1.],
                      [2., 0., 1., 0.],
                      [1., 1., 0., 2.]])
kernel = torch.tensor([[1., 0.],
                       [0., -1.]])

by_hand = torch.zeros(3, 3)  # a 2x2 kernel fits in 4 - 2 + 1 = 3 positions per side
for i in range(3):
    for j in range(3):
        patch = image[i:i + 2, j:j + 2]
        by_hand[i, j] = (patch * kernel).sum()
print(by_hand)

# F.conv2d wants (N, C, H, W) inputs and (out, in, kH, kW) kernels
torch_result = F.conv2d(image.reshape(1, 1, 4, 4), kernel.reshape(1, 1, 2, 2))[0, 0]
assert torch.equal(by_hand, torch_result)
# top-left: 1*1 + 2*0 + 0*0 + 1*(-1) = 0; the one to its right: 2*1 + 0*0 + 1*0 + 3*(-1) = -1

# %% [markdown]
# **Cross-correlation or convolution?** What PyTorch (and every deep-learning library) calls
# a convolution does *not* flip the kernel: mathematically it is a **cross-correlation**. The
# convolution of signal processing flips the kernel in both directions first. For a learnt
# kernel the difference does not matter (the network simply learns the flipped kernel), but
# it does when you copy a filter from a textbook. SciPy has both:

# %%
from scipy.signal import convolve2d, correlate2d

print("correlate2d == F.conv2d:        ", torch.equal(torch.from_numpy(correlate2d(image.numpy(), kernel.numpy(), mode="valid")), by_hand))
flipped = torch.flip(kernel, dims=[0, 1])
true_conv = F.conv2d(image.reshape(1, 1, 4, 4), flipped.reshape(1, 1, 2, 2))[0, 0]
print("convolve2d == F.conv2d(flipped):", torch.equal(torch.from_numpy(convolve2d(image.numpy(), kernel.numpy(), mode="valid")), true_conv))

# %% [markdown]
# **Several input channels.** A colour image has 3 channels; the maps inside a network have
# many. A filter then has one 2-D kernel *per input channel*: each is applied to its channel
# and the results are **added** into a single output map. With 2 input channels:

# %%
two_channels = torch.stack([image, torch.ones(4, 4)])  # (C=2, 4, 4): our image, and a plane of ones
kernel_2ch = torch.stack([kernel, torch.full((2, 2), 0.5)])  # (in=2, 2, 2): one kernel per channel

per_channel = [F.conv2d(two_channels[c].reshape(1, 1, 4, 4), kernel_2ch[c].reshape(1, 1, 2, 2))[0, 0] for c in range(2)]
together = F.conv2d(two_channels.unsqueeze(0), kernel_2ch.unsqueeze(0))[0, 0]  # weights (out=1, in=2, 2, 2)
print(together)
assert torch.equal(together, per_channel[0] + per_channel[1])  # the second channel adds 4 * 0.5 = 2 everywhere

# %% [markdown]
# ### 1.2 `nn.Conv2d`
#
# A layer learns many filters at once. Each filter produces one output *channel*, also
# called a *feature map*.
#
# `nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1)`:
#
# | argument | meaning |
# |---|---|
# | `in_channels` | channels of the input: 1 for a grey image, 3 for RGB |
# | `out_channels` | how many filters the layer learns = channels of the output |
# | `kernel_size` | side of each filter (5 means 5x5) |
# | `stride` | how many pixels the filter moves between positions; 2 roughly halves the size |
# | `padding` | rows/columns of zeros added around the input, so the border is not lost |
# | `dilation` | gap between the filter's taps: with 2, a 3x3 filter covers a 5x5 area |
#
# The weights have shape `(out_channels, in_channels, kernel, kernel)`: every filter looks
# at *all* the input channels, as above.

# %%
conv = nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5, stride=1, padding=2)
print("weights:", tuple(conv.weight.shape), " bias:", tuple(conv.bias.shape))

x = torch.randn(1, 1, 28, 28)  # a batch with one grey 28x28 image: (N, C, H, W)
print("input: ", tuple(x.shape))
print("output:", tuple(conv(x).shape))

# %% [markdown]
# ### 1.3 How big is the output?
#
# For an input of side $n$, a kernel $k$, stride $s$, padding $p$ and dilation $d$:
#
# $$n_\text{out} = \left\lfloor \frac{n + 2p - d\,(k-1) - 1}{s} \right\rfloor + 1$$
#
# Let us write the formula ourselves and compare it with two other sources: the shape of a
# real tensor after the layer, and cnnlab's layer explorer (`cnnlab.models.shapes`).

# %%
from cnnlab.models.shapes import conv_output_size, pool_output_size


def out_size(n, k, s=1, p=0, d=1):
    return math.floor((n + 2 * p - d * (k - 1) - 1) / s) + 1


cases = [  # (kernel, stride, padding, dilation)
    (5, 1, 2, 1),  # LeNet's first layer: "same" size
    (5, 1, 0, 1),  # no padding: loses k-1 = 4 pixels
    (3, 2, 1, 1),  # stride 2: roughly halves
    (3, 1, 0, 2),  # dilation 2: the 3x3 kernel covers 5x5
    (7, 3, 1, 1),  # a case where the floor matters
]
n = 28
print(f"{'k':>2} {'s':>2} {'p':>2} {'d':>2} | formula  tensor  cnnlab")
for k, s, p, d in cases:
    layer = nn.Conv2d(1, 1, kernel_size=k, stride=s, padding=p, dilation=d)
    real = layer(torch.zeros(1, 1, n, n)).shape[-1]
    ours = out_size(n, k, s, p, d)
    lib = conv_output_size(n, k, stride=s, padding=p, dilation=d)
    print(f"{k:>2} {s:>2} {p:>2} {d:>2} | {ours:>7} {real:>7} {lib:>7}")
    assert ours == real == lib

# %% [markdown]
# ### 1.4 `nn.MaxPool2d`
#
# Pooling has no weights: it summarises each window with a single number. `nn.MaxPool2d(kernel_size)`
# keeps the largest value of each window. Its arguments are almost the same as the convolution's
# (`kernel_size`, `stride`, `padding`, `dilation`) with two differences:
#
# - `stride` defaults to `kernel_size`, so the windows do not overlap and `MaxPool2d(2)` halves
#   the height and the width;
# - `ceil_mode=True` rounds up instead of down, so a last incomplete window is kept.
#
# A 4x4 example by hand: we split the matrix into four 2x2 windows and keep the maximum of each.

# %%
t = torch.tensor([[1., 3., 2., 4.],
                  [5., 6., 1., 2.],
                  [7., 2., 9., 0.],
                  [3., 4., 1., 8.]])
pooled = nn.MaxPool2d(2)(t.reshape(1, 1, 4, 4))
print(pooled[0, 0])
# top-left window [1, 3, 5, 6] -> 6, top-right [2, 4, 1, 2] -> 4,
# bottom-left [7, 2, 3, 4] -> 7, bottom-right [9, 0, 1, 8] -> 9
assert pooled[0, 0].tolist() == [[6., 4.], [7., 9.]]

# %% [markdown]
# The same output-size formula holds for pooling (with floor, or ceil if `ceil_mode=True`):

# %%
for size, k, s, ceil in [(28, 2, None, False), (10, 2, None, False), (7, 2, None, False), (7, 2, None, True), (28, 3, 2, False)]:
    layer = nn.MaxPool2d(k, stride=s, ceil_mode=ceil)
    real = layer(torch.zeros(1, 1, size, size)).shape[-1]
    lib = pool_output_size(size, k, stride=s, ceil_mode=ceil)
    print(f"MaxPool2d({k}, stride={s}, ceil_mode={ceil}) on {size}x{size} -> {real}x{real}  (cnnlab: {lib})")
    assert real == lib

# %% [markdown]
# ### 1.5 What a filter "sees"
#
# A network learns its filters, but we can also write one by hand. The 3x3 kernel below
# (a Sobel filter) responds strongly where the intensity changes from left to right, that is,
# at **vertical edges**; its transpose responds to horizontal edges. We apply it to an MNIST
# digit with `F.conv2d` (the functional version of `nn.Conv2d`: the weights are passed in).
#
# The line that loads MNIST is explained in section 2; the first time, it downloads the dataset.

# %%
from torchvision import datasets, transforms

train_set = datasets.MNIST(root=DATA_DIR, train=True, download=True, transform=transforms.ToTensor())
digit, label = train_set[0]  # a tensor of shape (1, 28, 28) with values in [0, 1]

vertical = torch.tensor([[-1., 0., 1.],
                         [-2., 0., 2.],
                         [-1., 0., 1.]])
kernels = torch.stack([vertical, vertical.T]).unsqueeze(1)  # (out=2, in=1, 3, 3)
maps = F.conv2d(digit.unsqueeze(0), kernels, padding=1)  # (1, 2, 28, 28)
after_pool = F.max_pool2d(F.relu(maps), 2)  # (1, 2, 14, 14)
print("feature maps:", tuple(maps.shape), "-> after ReLU + max-pool:", tuple(after_pool.shape))

fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
lim = maps.abs().max().item()
panels = [
    (digit[0], f"digit ({label})", dict(cmap="gray")),
    (maps[0, 0], "vertical edges", dict(cmap="coolwarm", vmin=-lim, vmax=lim)),
    (maps[0, 1], "horizontal edges", dict(cmap="coolwarm", vmin=-lim, vmax=lim)),
    (after_pool[0, 0], "vertical, ReLU + pool (14x14)", dict(cmap="gray")),
]
for ax, (img, title, style) in zip(axes, panels):
    ax.imshow(img, **style)
    ax.set_title(title)
    ax.axis("off")
fig.tight_layout()

# %% [markdown]
# Red and blue mark changes of opposite sign (dark to light or light to dark). After the ReLU
# only the positive responses remain, and the max-pool keeps them in a map half the size:
# the network still knows *that* there is an edge in that area, with less detail about *exactly where*.
#
# ### Exercises (predict, then run)
#
# 1. `nn.Conv2d(3, 8, kernel_size=3)`: how many parameters does it have?
# 2. What size is the output of `nn.Conv2d(1, 1, kernel_size=3, stride=2, padding=1)` on a 28x28 image?
# 3. In section 1.1, what does the output become if the kernel is `[[0, 0], [0, 1]]`?
#
# <details><summary>Solutions</summary>
#
# 1. 8 filters of 3 x 3 x 3 weights plus 8 biases: 8 * 27 + 8 = **224**
#    (`sum(p.numel() for p in nn.Conv2d(3, 8, 3).parameters())`).
# 2. floor((28 + 2 - 2 - 1) / 2) + 1 = **14**: `out_size(28, 3, s=2, p=1)`.
# 3. Each output takes the bottom-right pixel of its patch: the input without its first row
#    and first column, `image[1:, 1:]`.
#
# </details>

# %% [markdown]
# ## 2. torchvision
#
# `torchvision` brings together what you need to work with images: datasets (`datasets`),
# transformations (`transforms`), reading and writing files (`io`) and well-known architectures (`models`).
#
# ### 2.1 The MNIST dataset
#
# `datasets.MNIST` reads the original files from `root`; with `download=True` it downloads
# them first if they are not there yet (and does nothing if they are). `transforms.ToTensor()`
# turns each image into a `float32` tensor of shape `(1, 28, 28)` with values between 0 and 1.

# %%
train_set = datasets.MNIST(root=DATA_DIR, train=True, download=True, transform=transforms.ToTensor())
test_set = datasets.MNIST(root=DATA_DIR, train=False, download=True, transform=transforms.ToTensor())
print(len(train_set), "training images,", len(test_set), "test images")

image, label = train_set[0]
print("shape:", tuple(image.shape), "dtype:", image.dtype, "range:", (image.min().item(), image.max().item()), "label:", label)
print("classes:", train_set.classes)

# %%
fig, axes = plt.subplots(4, 8, figsize=(10, 5.6))
for i, ax in enumerate(axes.flat):
    image, label = train_set[i]
    ax.imshow(image[0], cmap="gray")
    ax.set_title(str(label))
    ax.axis("off")
fig.suptitle("The first 32 training images and their labels")
fig.tight_layout()

# %% [markdown]
# The same kind of grid in one call: `cnnlab.show_batch` draws `n` random training images with
# their labels (the same `seed`, the same images). It also takes your own `(images, labels)`.

# %%
import cnnlab

cnnlab.show_batch("mnist", n=32, data_dir=DATA_DIR, seed=0)

# %% [markdown]
# ### 2.2 Reading images: your own picture
#
# `torchvision.io` reads PNG and JPEG files as `uint8` tensors of shape `(C, H, W)`.
# Here are the photos of handwritten digits that come with this lesson (in `IMAGES`): not
# MNIST digits, but what a phone gives you: grey paper with uneven light, a chalk digit
# on a board, and a PNG with a transparent background.

# %%
from torchvision.io import ImageReadMode, read_image

photos = [IMAGES / name for name in DIGITS]
first = read_image(str(photos[0]))
print(photos[0].name, "->", tuple(first.shape), first.dtype)

fig, axes = plt.subplots(1, len(photos), figsize=(14, 1.8))
for ax, path in zip(axes, photos):
    ax.imshow(read_image(str(path), mode=ImageReadMode.RGB).permute(1, 2, 0))  # (H, W, C) for matplotlib
    ax.set_title(path.stem.removeprefix("digit_"), fontsize=8)
    ax.axis("off")

# %% [markdown]
# A model trained on MNIST only knows digits that look like MNIST's, and MNIST was built in a
# precise way: **light ink on a black background**, the digit **cropped** to its ink, **scaled
# to fit a 20x20 box** (keeping its shape), and pasted into 28x28 so that its **centre of mass**
# is in the middle. Squashing a whole photo to 28x28 gives a small grey digit on a grey
# background, off-centre: the model has never seen anything like it.
#
# cnnlab prepares pictures exactly that way (`cnnlab predict` and `cnnlab serve` use it).
# `mnist_steps` runs the same code and keeps the picture after each step, so we can watch:
#
# 1. **grey**: one channel; a transparent background is filled with the colour that contrasts
#    with the ink (white behind black ink), so it does not turn black;
# 2. **inverted when needed**: dark ink on light paper becomes light on dark (the chalk digit is left alone);
# 3. **background to 0**, the ink stretched to full contrast (paper grain below a threshold is dropped);
# 4. **cropped** to the ink;
# 5. **fitted into 20x20**, keeping the aspect ratio;
# 6. **centred by mass** in 28x28: what the network sees.

# %%
from cnnlab.data.images import mnist_steps

titles = {"decoded": "grey", "inverted": "inverted", "not_inverted": "not inverted", "stretched": "background 0",
          "cropped": "cropped", "fitted": "fitted into 20x20", "centred": "centred by mass"}
examples = [IMAGES / "digit_4.jpg", IMAGES / "digit_3_chalk.jpg", IMAGES / "digit_7_transparent.png"]
fig, axes = plt.subplots(len(examples), 6, figsize=(12, 2.2 * len(examples)))
for row, path in zip(axes, examples):
    for ax, (key, pixels) in zip(row, mnist_steps(path).items()):
        ax.imshow(pixels, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{titles[key]}\n{pixels.shape[0]}x{pixels.shape[1]}", fontsize=9)
        ax.axis("off")
fig.tight_layout()

# %% [markdown]
# `prepare` gives the last step as the tensor the model expects: `(1, 28, 28)`, values in
# [0, 1], like `ToTensor()` gives for MNIST. Try it with a photo of your own digit.

# %%
def prepare(path):
    """An image file -> the (1, 28, 28) float tensor a model trained on MNIST expects."""
    return torch.from_numpy(mnist_steps(path)["centred"] / 255).unsqueeze(0)


my_pictures = torch.stack([prepare(p) for p in photos])  # (12, 1, 28, 28): replace photos with your own files
true_labels = [int(p.stem.split("_")[1]) for p in photos]  # the digit is in the file name
print(tuple(my_pictures.shape), my_pictures.dtype)

fig, axes = plt.subplots(1, len(photos), figsize=(14, 1.6))
for ax, x, y in zip(axes, my_pictures, true_labels):
    ax.imshow(x[0], cmap="gray")
    ax.set_title(str(y))
    ax.axis("off")
fig.suptitle("What the network will see")

# %% [markdown]
# ### 2.3 Transforms
#
# A `transforms.Compose` chains transformations that are applied to every image as it is read.
# A typical chain for MNIST:
#
# - `RandomRotation(10)`: rotates the image by a random angle between -10 and 10 degrees. It is
#   *data augmentation*: each epoch the network sees slightly different versions of the same digit;
# - `ToTensor()`: from a PIL image to a tensor in [0, 1];
# - `Normalize((0.1307,), (0.3081,))`: subtracts the mean and divides by the standard deviation
#   of the MNIST training pixels, so the inputs are centred around 0.
#
# Where do 0.1307 and 0.3081 come from? Let us compute them:

# %%
pixels = train_set.data.float() / 255  # the 60,000 images as a single uint8 tensor, scaled to [0, 1]
print(f"mean {pixels.mean():.4f}, standard deviation {pixels.std():.4f}")

# %%
augment = transforms.Compose([
    transforms.RandomRotation(10),
    transforms.ToTensor(),
    transforms.Normalize((0.1307,), (0.3081,)),
])

raw_set = datasets.MNIST(root=DATA_DIR, train=True, download=True)  # no transform: PIL images
pil_image, label = raw_set[0]

fig, axes = plt.subplots(1, 8, figsize=(12, 2))
for ax in axes:
    variant = augment(pil_image)  # a new random rotation every call
    ax.imshow(variant[0], cmap="gray")
    ax.axis("off")
fig.suptitle(f"8 augmented versions of the same {label}")
fig.tight_layout()
print(f"values after Normalize: from {variant.min():.2f} to {variant.max():.2f}")

# %% [markdown]
# ### 2.4 The classic models
#
# `torchvision.models` has the architectures that marked the history of CNNs. With `weights=None`
# we get the architecture with random weights: nothing is downloaded. They are designed for
# 224x224 colour ImageNet images and 1,000 classes, hence their size compared with LeNet-5's
# ~62,000 parameters. What each one brought:
#
# - **AlexNet (2012)**: ReLU, dropout and training on GPUs; it won ImageNet by a wide margin and started the deep-learning wave.
# - **VGG (2014)**: depth from stacks of small 3x3 convolutions, one simple repeated block.
# - **GoogLeNet (2014)**: *Inception* modules (parallel 1x1, 3x3, 5x5 branches) and cheap 1x1 convolutions: deep but light.
# - **ResNet (2015)**: *residual* (skip) connections, which let networks of 100+ layers train.
#
# (GoogLeNet has two auxiliary classifiers that are only used during training; we leave them
# out with `aux_logits=False`, and `init_weights=False` avoids a slow initialisation we do not need here.)

# %%
from torchvision import models

classics = {
    "AlexNet (2012)": models.alexnet(weights=None),
    "VGG-11 (2014)": models.vgg11(weights=None),
    "GoogLeNet (2014)": models.googlenet(weights=None, aux_logits=False, init_weights=False),
    "ResNet-18 (2015)": models.resnet18(weights=None),
}
for name, net in classics.items():
    n_params = sum(p.numel() for p in net.parameters())
    print(f"{name:<18} {n_params:>12,} parameters")
del classics  # VGG-11 alone takes half a gigabyte of memory

# %% [markdown]
# cnnlab has its own registry of models, all adapted to small images (MNIST, CIFAR-10...):

# %%
import cnnlab

cnnlab.list_models()

# %% [markdown]
# ### Exercises (predict, then run)
#
# 1. `read_image` on `digit_7_transparent.png` (without `mode=`): how many channels?
# 2. What would the model see if we only resized the photo to 28x28 (no crop, no inversion)?
#    Predict, then look: `transforms.functional.resize(read_image(str(IMAGES / "digit_4.jpg"), mode=ImageReadMode.GRAY), [28, 28])`.
# 3. Which of MNIST's steps makes a digit written small in a corner of the page look like one written large in the middle?
#
# <details><summary>Solutions</summary>
#
# 1. **4**: red, green, blue and alpha (transparency).
# 2. A small, dark-grey digit on a lighter grey background, not centred: the opposite polarity to
#    MNIST and much less contrast. A model trained on MNIST often gets it wrong.
# 3. Cropping to the ink and fitting it into 20x20 (size), then centring by mass (position).
#
# </details>

# %% [markdown]
# ## 3. LeNet-5
#
# LeNet-5 (Yann LeCun, 1998) is the ancestor of modern CNNs. It has two parts:
#
# - `features`: two convolution -> ReLU -> max-pool stages that extract local patterns;
# - `classifier`: it flattens the maps into a vector and classifies it with three linear layers.
#
# Writing it as a subclass of `nn.Module` with `nn.Sequential` blocks keeps it readable:

# %%
class Lenet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


model = Lenet5()
model

# %% [markdown]
# **How this LeNet differs from the 1998 original.** This is the modern way to write it. The original:
#
# - took 32x32 images (MNIST digits padded by 2 pixels); here `padding=2` in the first convolution does the same job;
# - used a scaled **tanh** instead of ReLU, and **average pooling** ("subsampling", with a learnt
#   weight and bias) instead of max-pooling;
# - connected each of the 16 maps of the second convolution to only some of the 6 maps before
#   (a fixed table, to save computation and break symmetry); here every filter sees all 6;
# - ended in Euclidean **RBF units** instead of a linear layer with softmax and cross-entropy.
#
# cnnlab's `lenet5-classic` is the closest in spirit that trains with today's recipe (tanh and
# average pooling, the same layer sizes): `cnnlab.train("lenet5-classic", ...)` or
# `cnnlab compare` them to see what ReLU and max-pooling bring.

# %% [markdown]
# ### 3.1 Shapes, parameters and multiply-adds
#
# `cnnlab.summarize` runs one image through the model and lists, layer by layer, the output
# shape, the parameters and the multiply-adds (MACs: the number of multiplications with their
# addition that the convolutions and linear layers do for one image).

# %%
summary = cnnlab.summarize(model, (1, 28, 28))
summary

# %% [markdown]
# Let us check the totals by hand. A convolution has `out * (in * k * k) + out` parameters
# (weights plus biases) and does `out * in * k * k` multiplications for each output pixel;
# a linear layer has `out * in + out` parameters and does `out * in` multiplications.

# %%
params_by_hand = (
    (6 * 1 * 5 * 5 + 6)  # conv1
    + (16 * 6 * 5 * 5 + 16)  # conv2
    + (120 * 400 + 120) + (84 * 120 + 84) + (10 * 84 + 10)  # the three linear layers
)
macs_by_hand = (
    28 * 28 * 6 * (1 * 5 * 5)  # conv1: 6 maps of 28x28
    + 10 * 10 * 16 * (6 * 5 * 5)  # conv2: 16 maps of 10x10
    + 400 * 120 + 120 * 84 + 84 * 10
)
n_params = sum(p.numel() for p in model.parameters())
print(f"parameters: by hand {params_by_hand:,} | PyTorch {n_params:,} | summary {summary.total_params:,}")
print(f"MACs:       by hand {macs_by_hand:,} | summary {summary.total_macs:,}")
assert params_by_hand == n_params == summary.total_params

# %% [markdown]
# ### 3.2 Watching the shapes with *forward hooks*
#
# A *forward hook* is a function that PyTorch calls every time a layer finishes its `forward`.
# It is the mechanism tools like `summarize` use, and it helps a lot when debugging shapes.
# We hook a printing function onto every "leaf" layer (the ones that contain no other layers):

# %%
def show_shape(module, inputs, output):
    print(f"{module.__class__.__name__:<10} {str(tuple(inputs[0].shape)):<16} -> {tuple(output.shape)}")


handles = [m.register_forward_hook(show_shape) for m in model.modules() if not list(m.children())]
with torch.no_grad():
    model(torch.zeros(1, 1, 28, 28))
for h in handles:  # remove the hooks so they do not print on every forward pass from now on
    h.remove()

# %% [markdown]
# ### Exercises (predict, then run)
#
# 1. How many parameters would the first convolution have with 3 input channels (colour images)?
# 2. Without `padding=2`, what shape would come out of `features` for a 28x28 image, and what
#    would the first linear layer have to change to?
# 3. Which layer holds most of the parameters?
#
# <details><summary>Solutions</summary>
#
# 1. 6 * (3 * 5 * 5) + 6 = **456** (instead of 156).
# 2. 28 -> 24 -> 12 -> 8 -> 4: `(16, 4, 4)`, so `nn.Linear(16 * 4 * 4, 120)`. Check with
#    `cnnlab.summarize` on a copy of the class without the padding.
# 3. The first linear layer: 400 * 120 + 120 = **48,120** of the 61,706.
#
# </details>

# %% [markdown]
# ## 4. Training LeNet-5
#
# ### 4.1 With pytorch-ignite, with the loop in plain sight
#
# First we split the 60,000 training images into **50,000 for training** and **10,000 for
# validation**. The validation set is used to choose the best epoch; the test set (10,000 other
# images) is kept for the final evaluation. The split uses its own seeded generator so it is
# always the same.

# %%
from torch.utils.data import DataLoader, Subset, random_split

train_part, val_part = random_split(train_set, [50000, 10000], generator=torch.Generator().manual_seed(1234))
if QUICK:  # just check that it runs: a few thousand images
    train_part, val_part = Subset(train_part, range(3000)), Subset(val_part, range(1000))
print(len(train_part), "training images,", len(val_part), "for validation")

# %% [markdown]
# The cell below does the whole training, so running it again starts afresh (a new model, new
# handlers, an empty checkpoint folder) instead of piling a second set of handlers onto the first:
#
# - the **training step** is an ordinary function: it receives the `Engine` and one batch, moves
#   the batch to the device, and does forward pass -> loss -> backward pass -> optimiser step.
#   ignite calls it for every batch and takes care of the epochs and the events. The loss uses
#   `reduction="sum"` (the lesson's choice; with Adam the scale of the gradient hardly
#   matters); the step returns the mean per image, which is easier to read;
# - `create_supervised_evaluator` builds an `Engine` that runs the model without gradients and
#   updates some **metrics**. Careful: ignite's `Loss` metric expects the *mean* loss of the
#   batch (it multiplies it by the batch size itself), so it gets an `nn.CrossEntropyLoss()`
#   with the default reduction;
# - after each epoch we evaluate on training and validation, and the `ModelCheckpoint` keeps on
#   disk only the best model (`n_saved=1`) by its *score*: the validation loss with a minus sign
#   (higher is better);
# - the model's starting weights and the order of the batches come from seeded generators, so
#   a rerun gives the same numbers on the same machine.

# %%
import shutil

from ignite.engine import Engine, Events, create_supervised_evaluator
from ignite.handlers import ModelCheckpoint, global_step_from_engine
from ignite.metrics import Accuracy, Loss

torch.manual_seed(0)  # the starting weights
model = Lenet5().to(DEVICE)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
criterion = nn.CrossEntropyLoss(reduction="sum")
train_loader = DataLoader(train_part, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
train_eval_loader = DataLoader(train_part, batch_size=256)  # larger batches only evaluate faster
val_loader = DataLoader(val_part, batch_size=256)


def train_step(engine, batch):
    model.train()
    images, labels = (t.to(DEVICE) for t in batch)
    optimizer.zero_grad()
    loss = criterion(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss.item() / len(labels)


trainer = Engine(train_step)
metrics = {"loss": Loss(nn.CrossEntropyLoss()), "accuracy": Accuracy()}
train_evaluator = create_supervised_evaluator(model, metrics=metrics, device=DEVICE)
val_evaluator = create_supervised_evaluator(model, metrics=metrics, device=DEVICE)

checkpoint_dir = RUNS / "ignite-lenet5"
shutil.rmtree(checkpoint_dir, ignore_errors=True)  # this cell's own folder: a rerun starts clean
checkpoint = ModelCheckpoint(
    checkpoint_dir,
    filename_prefix="best",
    n_saved=1,
    score_function=lambda e: -e.state.metrics["loss"],
    score_name="neg_val_loss",
    global_step_transform=global_step_from_engine(trainer),  # the epoch, in the file name
)
val_evaluator.add_event_handler(Events.COMPLETED, checkpoint, {"model": model})

history = []


@trainer.on(Events.EPOCH_COMPLETED)
def log_epoch(engine):
    train_evaluator.run(train_eval_loader)
    val_evaluator.run(val_loader)
    tr, va = train_evaluator.state.metrics, val_evaluator.state.metrics
    history.append(dict(epoch=engine.state.epoch, train_loss=tr["loss"], train_acc=tr["accuracy"],
                        val_loss=va["loss"], val_acc=va["accuracy"]))
    print(f"epoch {engine.state.epoch}: train loss {tr['loss']:.4f} acc {tr['accuracy']:.4f} | "
          f"validation loss {va['loss']:.4f} acc {va['accuracy']:.4f}")


trainer.run(train_loader, max_epochs=EPOCHS);

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
epochs = [h["epoch"] for h in history]
for ax, key, name in [(axes[0], "loss", "loss (cross-entropy)"), (axes[1], "acc", "accuracy")]:
    ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
    ax.plot(epochs, [h[f"val_{key}"] for h in history], "o-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel(name)
    ax.set_xticks(epochs)  # one tick per epoch: whole numbers
    ax.legend()
fig.tight_layout()

# %% [markdown]
# The checkpoint kept the epoch with the lowest validation loss. We load it back into the model:

# %%
best_file = checkpoint.last_checkpoint
print("best checkpoint:", Path(best_file).name)
model.load_state_dict(torch.load(best_file, map_location=DEVICE))
model.eval();

# %% [markdown]
# And the photos from section 2.2? The model takes a batch: all twelve at once.

# %%
with torch.no_grad():
    probs = model(my_pictures.to(DEVICE)).softmax(dim=1).cpu()
guesses, confidence = probs.argmax(dim=1), probs.max(dim=1).values

fig, axes = plt.subplots(1, len(photos), figsize=(14, 1.9))
for ax, x, y, g, c in zip(axes, my_pictures, true_labels, guesses, confidence):
    ax.imshow(x[0], cmap="gray")
    ax.set_title(f"{g.item()} ({c.item():.2f})", color="black" if g.item() == y else "red", fontsize=9)
    ax.axis("off")
right = sum(g.item() == y for g, y in zip(guesses, true_labels))
fig.suptitle(f"the ignite model: {right}/{len(photos)} right (prediction and probability; red = wrong)")
print(f"{right}/{len(photos)} photos right")

# %% [markdown]
# ### 4.2 The same thing with one cnnlab call
#
# **Which learning rate?** The lesson uses Adam at 1e-3. The *learning-rate range test* (Leslie
# Smith; fastai's `lr_find`) trains a copy of the network for a few hundred batches while the rate
# grows from 1e-7 to 10, and records the loss. Where the loss falls fastest is a good rate; where it
# shoots up, training diverges. Your `Lenet5()` is not changed, and nothing is written.

# %%
torch.manual_seed(0)  # the starting weights of the copy that is tried
found = cnnlab.lr_find(Lenet5(), "mnist", data_dir=DATA_DIR, subset=SUBSET)
print(found.text())
found.plot()

# %% [markdown]
# Now the training itself. `cnnlab.train` follows the same recipe (the 50,000/10,000 split with seed 1234, batch 32,
# Adam with lr 1e-3, summed loss, the best checkpoint by validation loss) and also evaluates
# the best model on the test set. It accepts your own `nn.Module` or the name of a registered
# model, and uses the GPU when there is one. Everything is written to `run_dir`, and
# `overwrite=True` lets you run the cell again. Your module is trained from the weights it
# has, so we seed before building it.

# %%
torch.manual_seed(0)  # the starting weights of our Lenet5
run = cnnlab.train(Lenet5(), data="mnist", data_dir=DATA_DIR, run_dir=RUNS / "lenet5-own",
                   epochs=EPOCHS, subset=SUBSET, overwrite=True)
run

# %% [markdown]
# The history has one dictionary per epoch, with the same metrics we printed by hand with ignite:

# %%
run.history

# %%
print("best epoch:", run.best_epoch, "| test accuracy:", run.test.accuracy)

# %% [markdown]
# **Why are these numbers not the ones ignite printed?** Same recipe, same split, same starting
# weights, yet the two trainings differ in the last digits. The batches come in a different
# random order (cnnlab draws them from its own seeded generator, on the device), and floating-point
# additions done in a different order round differently; after thousands of steps the two models
# are different models of the same quality. The same happens across machines: the same code
# gives slightly different figures on a CPU with other vector instructions (AVX2, AVX-512) or on a
# GPU. Seeds make a run repeatable *on one machine*; they do not make all machines agree.
#
# The registry's LeNet-5 works the same way, by name:
#
# ```python
# run = cnnlab.train("lenet5", data="mnist", data_dir=DATA_DIR, run_dir=RUNS / "lenet5", epochs=EPOCHS)
# ```
#
# A run can be **loaded back** later: `cnnlab.load` gives a *predictor*, the model plus
# everything needed to feed it raw pictures. For a model defined by your own class, cnnlab
# needs a fresh instance to put the weights of the best checkpoint (`best.pt`) into.
# `predict` takes file names and prepares them as in section 2.2 (it is what the command
# `cnnlab predict` runs):

# %%
predictor = cnnlab.load(run.path, model=Lenet5())
predictions = predictor.predict(photos, top_k=1)
right = sum(int(p.label) == y for p, y in zip(predictions, true_labels))
print(f"cnnlab's model: {right}/{len(photos)} photos right")
for path, p in zip(photos, predictions):
    print(f"{path.name:<24} {p.label} ({p.prob:.3f})")

# %% [markdown]
# ### Exercises (predict, then run)
#
# 1. Run the ignite cell a second time: will the printed losses change?
# 2. Replace `torch.manual_seed(0)` by `torch.manual_seed(1)` in that cell: will the final
#    validation accuracy be higher, lower, or about the same?
# 3. With `batch_size=128` instead of 32, how many optimiser steps are there per epoch on the
#    50,000 training images?
#
# <details><summary>Solutions</summary>
#
# 1. No: the cell seeds the weights and the batch order and starts from a fresh model, so on the
#    same machine it prints the same numbers (on a GPU, nearly: some GPU kernels add in a varying order).
# 2. About the same (within a few tenths of a percent), in either direction: a different seed is
#    a different, equally good draw.
# 3. ceil(50,000 / 128) = **391** (instead of 1,563): four times fewer steps, which is why a larger
#    batch usually wants a larger learning rate.
#
# </details>

# %% [markdown]
# ## 5. The best model on the test set
#
# Accuracy alone says little: *which* digits does the model get wrong, and with which does it
# confuse them?
#
# ### 5.1 By hand (the ignite model)
#
# We predict the 10,000 test images and count, for each true class (row), how many images went
# to each predicted class (column): the **confusion matrix**. The diagonal holds the right answers.

# %%
from sklearn.metrics import confusion_matrix

test_loader = DataLoader(test_set, batch_size=256)
predictions, targets = [], []
with torch.no_grad():
    for images, labels in test_loader:
        predictions.append(model(images.to(DEVICE)).argmax(dim=1).cpu())
        targets.append(labels)
y_pred = torch.cat(predictions).numpy()
y_true = torch.cat(targets).numpy()

print(f"test accuracy of the ignite model: {(y_pred == y_true).mean():.4f}")
print(confusion_matrix(y_true, y_pred))

# %% [markdown]
# ### 5.2 With cnnlab (the run from section 4.2)
#
# `run.interpret()` (or `cnnlab.interpret(run)`) predicts the test set with the best checkpoint
# once and keeps everything needed for the analysis. Its accuracy is not the ignite model's:
# they are two different trainings (section 4.2).
#
# The **classification report** gives, for each class, the *precision* (of the images predicted
# as this class, the fraction that really are), the *recall* (of the images of this class, the
# fraction found) and the *F1* score (their harmonic mean); *support* is the number of test images of the class.

# %%
interp = run.interpret()
print(interp.report)

# %% [markdown]
# The same confusion matrix as in 5.1, now as a figure, and the most frequent confusions as
# (true class, predicted class, count):

# %%
interp.plot_confusion_matrix()

# %%
interp.most_confused(5)

# %% [markdown]
# The gallery of mistakes: misclassified 8s, 4s and 9s, each titled with what the model
# predicted and its probability. Many are genuinely ambiguous even for a person.

# %%
interp.plot_misclassified(classes=[8, 4, 9], per_class=10)

# %% [markdown]
# The images with the **largest loss** are the ones where the model was very confident and wrong:
# they often reveal badly written digits or even wrong labels in the dataset.

# %%
interp.plot_top_losses(9)

# %% [markdown]
# **Calibration**: when the model says "90% sure", is it right 90% of the time? The reliability
# diagram groups the test images by the model's confidence (15 bins) and draws, for each bin,
# how often the model was actually right: a perfectly calibrated model follows the diagonal.
# The **ECE** in its title (*expected calibration error*) sums that up in one number: the gap
# between confidence and accuracy in each bin, averaged with each bin weighted by its number of
# images. 0 is perfect; an ECE of 0.01 means the model's confidence is off by about one
# percentage point on average.

# %%
interp.plot_calibration()

# %% [markdown]
# And the training curves of the run, per epoch:

# %%
interp.plot_curves()

# %% [markdown]
# ### 5.3 Inside the network
#
# Until now we have looked at the network from the outside: an image goes in, ten probabilities come
# out. `cnnlab.explain` follows **one image** through **your own LeNet-5** and keeps what every layer
# produced, the prediction, and which pixels drove it. It uses the same *forward hooks* as section 3.2.
#
# We give it the run of section 4.2 and one of the photos of section 2.2: the 4 on grey paper.
# Put the path of **a digit you drew** there instead (on paper and photographed, or in any drawing
# program). With a run folder, cnnlab prepares the file exactly as `cnnlab predict` does, which is
# what our `prepare` of section 2.2 does too; `model=Lenet5()` is a fresh instance of our class, to
# load the best weights into.

# %%
photo = IMAGES / "digit_4.jpg"  # or your own file: Path("my_digit.png")
ex = cnnlab.explain(run.path, photo, model=Lenet5())
assert torch.equal(ex.input, prepare(photo))  # the network saw exactly what section 2.2 prepared
ex

# %% [markdown]
# `ex.activations` holds every convolution, activation, pooling and linear layer's output, under the
# **names of our own module** (`features.0` is the first entry of `self.features`). Each shape is the
# one `cnnlab.summarize` listed in section 3.1, and the sides are the ones the formula of section 1.3
# gives, layer after layer:

# %%
shapes_31 = {row.name: tuple(row.output_shape) for row in summary.rows}  # the table of section 3.1
for name, out in ex.activations.items():
    print(f"{name:<14} {ex.kinds[name]:<10} {tuple(out.shape)}")
    assert tuple(out.shape) == shapes_31[name]

side1 = conv_output_size(28, 5, padding=2)   # 28: padding 2 keeps the size
side2 = pool_output_size(side1, 2)           # 14: the pool halves it
side3 = conv_output_size(side2, 5)           # 10: a 5x5 kernel without padding loses 4
side4 = pool_output_size(side3, 2)           # 5
assert tuple(ex.activations["features.0"].shape) == (6, side1, side1)
assert tuple(ex.activations["features.2"].shape) == (6, side2, side2)
assert tuple(ex.activations["features.3"].shape) == (16, side3, side3)
assert tuple(ex.activations["features.5"].shape) == (16, side4, side4)
print("16 x 5 x 5 =", 16 * side4 * side4, "numbers go into the first linear layer")

# %% [markdown]
# Now we can **see** those tensors. Each row is a layer, each small image one channel (one filter's
# answer). The first convolution's maps still look like the digit (edges in several directions, as
# the hand-made filters of section 1.5); after each pooling they are half the size, and the second
# convolution's 16 maps respond to combinations of strokes: parts of digits rather than pixels.

# %%
ex.plot_layers()

# %% [markdown]
# **A kernel, by hand.** Every value of a map is a sum: the kernel's weights times the input values
# under it, plus the bias (section 1.1, with several input channels). `plot_kernel` shows one
# channel of the second convolution at the position where it answers most strongly: the window it
# read on each of its 6 input channels, the 6 kernels of 5x5 weights, and the sum. `ex.kernel(...)`
# gives the same numbers.

# %%
channel = int(ex.activations["features.3"].flatten(1).amax(1).argmax())  # the most active of the 16
k = ex.kernel("features.3", channel)
print("window", tuple(k["window"].shape), "x kernel", tuple(k["weight"].shape),
      f"-> sum {k['sum']:.3f} + bias {k['bias']:.3f} = {k['value']:.3f}  (the layer computed {k['recorded']:.3f})")
ex.plot_kernel("features.3", channel)

# %% [markdown]
# **Which pixels decided?** `ex.attribution` is a 28x28 map (Integrated Gradients, computed with
# captum): red pixels pushed the network towards its answer, blue ones against it. Its sum is how
# much the class's score rose from a black image to yours.

# %%
print(f"prediction: {ex.prediction.label} (probability {ex.prediction.probability:.2f})")
ex.plot_attribution()

# %% [markdown]
# `target=` asks about another class: which strokes would speak for a "1"?

# %%
cnnlab.explain(run.path, photo, model=Lenet5(), target="1").plot_attribution()

# %% [markdown]
# The same on the test set's worst mistakes, and a map of how the network arranges the test
# images just before its last layer (t-SNE of the 84 features: each island is a class; the ringed
# points are mistakes, usually between the two classes they mix up):

# %%
interp.plot_top_losses(9, heatmap=True)

# %%
interp.plot_embedding()

# %% [markdown]
# And live: `cnnlab serve runs/lenet5-own` opens a page where you draw a digit and watch every
# convolution and pooling map change as you draw; click a map to see its kernel and arithmetic,
# and tick the box to see which pixels drove the prediction.

# %% [markdown]
# ### Exercises (predict, then run)
#
# 1. In the confusion matrix, what does the sum of row 3 count? And the sum of column 3?
# 2. A model that always answers "1": what would its recall for class 1 be? Its precision?
# 3. Which pair do you expect at the top of `interp.most_confused()` for a LeNet: (4, 9), (0, 1) or (2, 6)?
# 4. In section 5.3, how many multiplications add up to the one value that `plot_kernel` shows?
#
# <details><summary>Solutions</summary>
#
# 1. Row 3: the test images that *are* 3s (the support of class 3). Column 3: the images the
#    model *called* 3.
# 2. Recall **1.0** (it finds every 1); precision about **0.11**: only 1,135 of the 10,000
#    test images are 1s.
# 3. Usually (4, 9) or (9, 4), or pairs like (7, 2) and (3, 5): digits whose strokes are close.
#    (0, 1) almost never happens.
# 4. One per weight of the filter: 6 input channels x 5 x 5 = **150** (`k["products"].numel()`),
#    then the bias is added.
#
# </details>

# %% [markdown]
# ## 6. Where to go next
#
# **Data augmentation.** Small rotations and shifts make the model more robust to the way people
# write. cnnlab applies them with `augment=`: `"auto"` picks the dataset's preset (small random
# rotations, shifts and zooms for MNIST); `"none"` turns it off. The cell below is only a one-epoch
# taste on a few images; to see the effect, compare two full trainings, with and without augmentation.

# %%
augmented = cnnlab.train("lenet5", data="mnist", data_dir=DATA_DIR, run_dir=RUNS / "lenet5-augment",
                         epochs=1, subset=2000, augment="auto", overwrite=True)
augmented.test.accuracy

# %% [markdown]
# **A pretrained model.** Instead of starting from random weights you can start from torchvision's
# ImageNet weights (*transfer learning*). The first time it downloads the weights, so it needs internet:
#
# ```bash
# cnnlab train --model resnet18 --pretrained
# ```
#
# **The command line.** Everything in this notebook can also be done from a terminal:
#
# ```bash
# cnnlab train                       # the lesson's recipe: LeNet-5, MNIST, 5 epochs
# cnnlab train --augment auto        # the same with data augmentation
# cnnlab analyze runs/RUN            # section 5's analysis, written to runs/RUN/analysis/
# cnnlab analyze runs/RUN --classes 8 4 9 --per-class 10
# cnnlab predict runs/RUN my_digit.jpg   # section 2.2's preparation, then the model
# cnnlab serve runs/RUN              # a web page to draw digits and watch the model classify them
# ```
#
# Replace `runs/RUN` with the folder of your training (for example `runs/lenet5-own`).
