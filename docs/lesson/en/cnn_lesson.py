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
# This notebook walks through the chapter step by step, with code you can run:
#
# 1. **Convolution and pooling**: what each argument of `nn.Conv2d` and `nn.MaxPool2d` does,
#    and how to predict the size of the output.
# 2. **torchvision**: datasets, reading and writing images, transforms and the classic models.
# 3. **LeNet-5**: the network written as a class, layer by layer.
# 4. **Training** with pytorch-ignite, with the loop in plain sight, and then the same thing
#    with a single `cnnlab` call.
# 5. **Analysing** the best model on the test set: report, confusion matrix, mistakes.
# 6. **Where to go next**: augmentation, pretrained models and the command line.
#
# The notebook runs offline: MNIST has to be on disk already (`download=False`).

# %% [markdown]
# ## 0. Settings
#
# - `DATA_DIR` is the folder that *contains* `MNIST/raw/` (the four `*-ubyte` files).
#   The default points to the repository's `shared/data` folder, relative to this
#   notebook's folder (`docs/lesson/en/`); set the environment variable
#   `CNNLAB_DATA_DIR` if your copy is somewhere else.
# - `QUICK = True` (the environment variable `CNNLAB_LESSON_QUICK=1`, which CI sets) trains
#   for a single epoch on a few thousand images, just to check that everything runs.
#   With `QUICK = False` you follow the lesson: 50,000 training images, 10,000 validation
#   images, 5 epochs (a few minutes on a laptop CPU).
# - `RUNS` is where the trainings write their checkpoints.

# %%
import os
from pathlib import Path

DATA_DIR = os.environ.get("CNNLAB_DATA_DIR", "../../../../shared/data")  # the folder holding MNIST/raw/
QUICK = os.environ.get("CNNLAB_LESSON_QUICK", "0") == "1"  # CI sets 1: one epoch on a few thousand images
EPOCHS = 1 if QUICK else 5
SUBSET = 3000 if QUICK else None  # training images (None: the lesson's 50k/10k split)
RUNS = Path(os.environ.get("CNNLAB_LESSON_RUNS", "runs"))

print("MNIST files found:", (Path(DATA_DIR) / "MNIST" / "raw").is_dir(), "| quick mode:", QUICK, "| epochs:", EPOCHS)

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0);  # the same random numbers on every run

# %% [markdown]
# ## 1. Convolution and pooling
#
# ### 1.1 `nn.Conv2d`
#
# A 2-D convolution slides small filters (*kernels*) over the image. At every position it
# multiplies the filter by the patch underneath, adds everything up (plus a bias) and writes
# a single number. Each filter produces one output *channel*, also called a *feature map*.
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
# at *all* the input channels.

# %%
conv = nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5, stride=1, padding=2)
print("weights:", tuple(conv.weight.shape), " bias:", tuple(conv.bias.shape))

x = torch.randn(1, 1, 28, 28)  # a batch with one grey 28x28 image: (N, C, H, W)
print("input: ", tuple(x.shape))
print("output:", tuple(conv(x).shape))

# %% [markdown]
# ### 1.2 How big is the output?
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
# ### 1.3 `nn.MaxPool2d`
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
# ### 1.4 What a filter "sees"
#
# A network learns its filters, but we can also write one by hand. The 3x3 kernel below
# (a Sobel filter) responds strongly where the intensity changes from left to right, that is,
# at **vertical edges**; its transpose responds to horizontal edges. We apply it to an MNIST
# digit with `F.conv2d` (the functional version of `nn.Conv2d`: the weights are passed in).
#
# The line that loads MNIST is explained in section 2.

# %%
from torchvision import datasets, transforms

train_set = datasets.MNIST(root=DATA_DIR, train=True, download=False, transform=transforms.ToTensor())
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

# %% [markdown]
# ## 2. torchvision
#
# `torchvision` brings together what you need to work with images: datasets (`datasets`),
# transformations (`transforms`), reading and writing files (`io`) and well-known architectures (`models`).
#
# ### 2.1 The MNIST dataset
#
# `datasets.MNIST` reads the original files. With `download=False` it does not try to download
# anything (it fails if they are missing). `transforms.ToTensor()` turns each image into a
# `float32` tensor of shape `(1, 28, 28)` with values between 0 and 1.

# %%
train_set = datasets.MNIST(root=DATA_DIR, train=True, download=False, transform=transforms.ToTensor())
test_set = datasets.MNIST(root=DATA_DIR, train=False, download=False, transform=transforms.ToTensor())
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
# ### 2.2 Reading and writing images: your own picture
#
# `torchvision.io` reads and writes PNG and JPEG files as `uint8` tensors of shape
# `(C, H, W)`. We save a digit to a temporary folder and read it back.

# %%
import tempfile

from torchvision.io import ImageReadMode, read_image, write_png

tmp_dir = Path(tempfile.mkdtemp())
image, label = train_set[0]
image_u8 = (image * 255).round().to(torch.uint8)  # write_png wants uint8 values 0..255
png_path = tmp_dir / f"digit_{label}.png"
write_png(image_u8, str(png_path))

back = read_image(str(png_path), mode=ImageReadMode.GRAY)
print(png_path.name, "->", tuple(back.shape), back.dtype, "| identical to what we wrote:", torch.equal(back, image_u8))

# %% [markdown]
# To feed **your own picture** (a digit drawn on paper, a photo...) to a model trained on MNIST
# it has to look like MNIST: one grey channel, 28x28 pixels, values in [0, 1] and a **light digit
# on a dark background**. The function below prepares any image file; try it with one of your own.

# %%
def prepare(path):
    """An image file -> a (1, 28, 28) float tensor that looks like MNIST."""
    img = read_image(str(path), mode=ImageReadMode.GRAY)  # (1, H, W) uint8
    img = transforms.functional.resize(img, [28, 28], antialias=True)
    x = img.float() / 255
    if x.mean() > 0.5:  # dark ink on white paper: invert it
        x = 1 - x
    return x


my_picture = prepare(png_path)  # replace png_path with the path of your own image
print(tuple(my_picture.shape), my_picture.dtype)

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

raw_set = datasets.MNIST(root=DATA_DIR, train=True, download=False)  # no transform: PIL images
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
# ~62,000 parameters.
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
# ## 3. LeNet-5
#
# LeNet-5 (Yann LeCun, 1998) is the ancestor of modern CNNs. It has two parts:
#
# - `features`: two convolution -> ReLU -> max-pool stages that extract local patterns;
# - `classifier`: it flattens the maps into a vector and classifies it with three linear layers.
#
# The `padding=2` of the first convolution keeps the 28x28 size (the original network took
# 32x32 images). Writing it as a subclass of `nn.Module` with `nn.Sequential` blocks keeps it readable:

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

train_loader = DataLoader(train_part, batch_size=32, shuffle=True)
# Evaluation loaders: larger batches are only faster, they do not change the result.
train_eval_loader = DataLoader(train_part, batch_size=256)
val_loader = DataLoader(val_part, batch_size=256)
print(len(train_part), "training images in", len(train_loader), "batches of 32;", len(val_part), "for validation")

# %% [markdown]
# The training step is an ordinary function: it receives the `Engine` and one batch, and does
# forward pass -> loss -> backward pass -> optimiser step. ignite calls it for every batch and
# takes care of the epochs and the events.
#
# The loss uses `reduction="sum"`: it adds up the losses of the images in the batch instead of
# averaging them. (With Adam the scale of the gradient hardly matters.) The step returns the
# mean per image, which is easier to read.

# %%
from ignite.engine import Engine, Events, create_supervised_evaluator
from ignite.handlers import ModelCheckpoint, global_step_from_engine
from ignite.metrics import Accuracy, Loss

torch.manual_seed(0)
model = Lenet5()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
criterion = nn.CrossEntropyLoss(reduction="sum")


def train_step(engine, batch):
    model.train()
    images, labels = batch
    optimizer.zero_grad()
    logits = model(images)
    loss = criterion(logits, labels)
    loss.backward()
    optimizer.step()
    return loss.item() / len(labels)


trainer = Engine(train_step)

# %% [markdown]
# To evaluate, `create_supervised_evaluator` builds an `Engine` that runs the model without
# gradients and updates some **metrics**. Careful: ignite's `Loss` metric expects the loss
# function to return the *mean* of the batch (it multiplies it by the batch size itself), so here
# we give it an `nn.CrossEntropyLoss()` with the default reduction, not the summed one.
#
# After each epoch we evaluate on training and validation and print both. The `ModelCheckpoint`
# hangs off the validation evaluator: each time it finishes it computes a *score*, the validation
# loss with a minus sign (higher is better), and keeps on disk only the best model (`n_saved=1`).

# %%
metrics = {"loss": Loss(nn.CrossEntropyLoss()), "accuracy": Accuracy()}
train_evaluator = create_supervised_evaluator(model, metrics=metrics)
val_evaluator = create_supervised_evaluator(model, metrics=metrics)

checkpoint = ModelCheckpoint(
    RUNS / "ignite-lenet5",
    filename_prefix="best",
    n_saved=1,
    score_function=lambda e: -e.state.metrics["loss"],
    score_name="neg_val_loss",
    global_step_transform=global_step_from_engine(trainer),  # the epoch, in the file name
    require_empty=False,
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
for ax, key, title in [(axes[0], "loss", "loss"), (axes[1], "acc", "accuracy")]:
    ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
    ax.plot(epochs, [h[f"val_{key}"] for h in history], "o-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.legend()
fig.tight_layout()

# %% [markdown]
# The checkpoint kept the epoch with the lowest validation loss. We load it back into the model:

# %%
best_file = checkpoint.last_checkpoint
print("best checkpoint:", Path(best_file).name)
model.load_state_dict(torch.load(best_file, map_location="cpu"))
model.eval();

# %% [markdown]
# And the picture from section 2.2? The model expects a batch, so we add a dimension with `unsqueeze(0)`:

# %%
with torch.no_grad():
    probs = model(my_picture.unsqueeze(0)).softmax(dim=1)[0]
print(f"the model says {probs.argmax().item()} with probability {probs.max().item():.3f}")

# %% [markdown]
# ### 4.2 The same thing with one cnnlab call
#
# `cnnlab.train` follows the same recipe (the 50,000/10,000 split with seed 1234, batch 32,
# Adam with lr 1e-3, summed loss, the best checkpoint by validation loss) and also evaluates
# the best model on the test set. It accepts your own `nn.Module` or the name of a registered
# model. Everything is written to `run_dir`, and `overwrite=True` lets you run the cell again.

# %%
run = cnnlab.train(Lenet5(), data="mnist", data_dir=DATA_DIR, run_dir=RUNS / "lenet5-own",
                   epochs=EPOCHS, subset=SUBSET, overwrite=True)
run

# %% [markdown]
# The history has one dictionary per epoch, with the same metrics we printed by hand with ignite:

# %%
run.history

# %%
print("best epoch:", run.best_epoch, "| test accuracy:", run.test.accuracy)
print(run.test.text)

# %% [markdown]
# The registry's LeNet-5 works the same way, by name:
#
# ```python
# run = cnnlab.train("lenet5", data="mnist", data_dir=DATA_DIR, run_dir=RUNS / "lenet5", epochs=EPOCHS)
# ```
#
# A run can be **loaded back** later. For a model defined by your own class, cnnlab needs a fresh
# instance to put the weights of the best checkpoint (`best.pt`) into. Both models give exactly
# the same outputs:

# %%
again = cnnlab.load(run.path, model=Lenet5())
device = next(run.model.parameters()).device  # cnnlab trains on the GPU when there is one
x = torch.stack([test_set[i][0] for i in range(16)]).to(device)  # 16 test images
again.model.to(device).eval()
run.model.eval()
with torch.no_grad():
    print("same outputs:", torch.equal(again.model(x), run.model(x)))

# %% [markdown]
# ## 5. The best model on the test set
#
# Accuracy alone says little: *which* digits does the model get wrong, and with which does it
# confuse them?
#
# ### 5.1 By hand with scikit-learn (the ignite model)
#
# We predict the 10,000 test images and compare with the true labels.
# `classification_report` gives precision, recall and F1 for each class; `confusion_matrix`
# counts, for each true class (row), how many images went to each predicted class (column).

# %%
from sklearn.metrics import classification_report, confusion_matrix

test_loader = DataLoader(test_set, batch_size=256)
predictions, targets = [], []
with torch.no_grad():
    for images, labels in test_loader:
        predictions.append(model(images).argmax(dim=1))
        targets.append(labels)
y_pred = torch.cat(predictions).numpy()
y_true = torch.cat(targets).numpy()

print(classification_report(y_true, y_pred, digits=3))
print(confusion_matrix(y_true, y_pred))

# %% [markdown]
# ### 5.2 With cnnlab (the run from section 4.2)
#
# `run.interpret()` (or `cnnlab.interpret(run)`) predicts the test set with the best checkpoint
# once and keeps everything needed for the analysis.

# %%
interp = run.interpret()
print(interp.report)

# %%
interp.confusion_matrix()

# %% [markdown]
# The most frequent confusions, as (true class, predicted class, count):

# %%
interp.most_confused(5)

# %%
interp.plot_confusion_matrix()

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
# **Calibration**: when the model says "90% sure", is it right 90% of the time? In the
# reliability diagram a perfectly calibrated model follows the diagonal.

# %%
interp.plot_calibration()

# %% [markdown]
# And the training curves of the run, per epoch:

# %%
interp.plot_curves()

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
# cnnlab serve runs/RUN              # a web page to draw digits and watch the model classify them
# ```
#
# Replace `runs/RUN` with the folder of your training (for example `runs/lenet5-own`).
