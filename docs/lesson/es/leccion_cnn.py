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
# # Una red convolucional en PyTorch
#
# [![Abrir en Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/cnnlab/cnnlab/blob/main/docs/lesson/es/leccion_cnn.ipynb)
#
# Este cuaderno recorre el capítulo paso a paso, con código que puedes ejecutar:
#
# 1. **Convolución y *pooling***: una convolución hecha a mano, qué hace cada argumento de
#    `nn.Conv2d` y `nn.MaxPool2d` y cómo predecir el tamaño de la salida.
# 2. **torchvision**: conjuntos de datos, lectura de imágenes (tu propia foto, preparada como se
#    preparó MNIST), transformaciones y los modelos clásicos.
# 3. **LeNet-5**: la red escrita como una clase, capa a capa, y en qué se diferencia de la original de 1998.
# 4. **Entrenamiento** con pytorch-ignite, con el bucle a la vista, y después lo mismo con una
#    sola llamada a `cnnlab` (tras buscar una tasa de aprendizaje con `cnnlab.lr_find`).
# 5. **Análisis** del mejor modelo sobre el conjunto de test: informe, matriz de confusión, errores, calibración;
#    y dentro de la red: los mapas de cada capa para una imagen, las cuentas de un núcleo, qué píxeles decidieron.
# 6. **Para seguir**: aumento de datos, modelos preentrenados y la línea de comandos.
#
# Cada sección termina con ejercicios cortos: primero **predice** la respuesta, **después
# ejecuta** el código; las soluciones están plegadas.
#
# Funciona en Colab, en un portátil (basta la CPU: unos minutos) o en una GPU.

# %% [markdown]
# ## 0. Preparación
#
# La primera celda instala lo que falte, y solo si falta (en Colab: cnnlab y pytorch-ignite;
# torch ya está y **nunca** se reinstala), y elige el dispositivo: una GPU CUDA, MPS de Apple o la CPU.

# %%
import importlib.util
import sys

if importlib.util.find_spec("cnnlab") is None or importlib.util.find_spec("ignite") is None:
    import torch
    import torchvision

    # Fijamos el torch que ya está instalado, para que pip lo conserve en lugar de descargar otro.
    keep = [f"torch=={torch.__version__.split('+')[0]}", f"torchvision=={torchvision.__version__.split('+')[0]}"]
    # %pip install --quiet "cnnlab @ git+https://github.com/cnnlab/cnnlab" {" ".join(keep)}

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
print("torch", torch.__version__, "| dispositivo:", DEVICE)

# %% [markdown]
# **Ajustes.**
#
# - `DATA_DIR`: dónde está MNIST, buscado como lo busca cnnlab: la variable de entorno
#   `CNNLAB_DATA_DIR` si está definida y, si no, la carpeta de datos de cnnlab
#   (`~/.cache/cnnlab/data`). La primera vez MNIST (unos 12 MB) se descarga ahí; después se lee del disco.
# - `QUICK = True` (la variable de entorno `CNNLAB_LESSON_QUICK=1`, que ponen las pruebas y la
#   construcción de la documentación) entrena una sola época con unos pocos miles de imágenes,
#   solo para comprobar que todo se ejecuta. Con `QUICK = False` sigues la lección: 50.000
#   imágenes de entrenamiento, 10.000 de validación y 5 épocas.
# - `RUNS` es donde los entrenamientos escriben sus puntos de control (*checkpoints*); `IMAGES`
#   contiene las fotos de dígitos de la sección 2.2 (se descargan si este cuaderno no está dentro de su repositorio).
# - `CNNLAB_LANG`: el idioma de lo que cnnlab escribe y dibuja: el registro del entrenamiento, las
#   tablas, el informe de test y todas las figuras, con los números escritos como en español
#   (`61.706` parámetros, `98,70 %` de exactitud). Este cuaderno pide español (`"en"` da inglés)
#   con una línea corriente de `os.environ` en la celda de abajo: define una variable de entorno
#   del propio proceso de Python de este cuaderno (el *kernel*), a partir de esa línea, y nada
#   fuera de él. Cada llamada acepta además `lang="es"` o `lang="en"` solo para ella.

# %%
import os
from pathlib import Path

from cnnlab.data.tensors import resolve_data_dir

os.environ["CNNLAB_LANG"] = "es"  # el idioma de lo que cnnlab escribe y dibuja en este cuaderno

DATA_DIR = resolve_data_dir(None)  # $CNNLAB_DATA_DIR o, si no, ~/.cache/cnnlab/data
QUICK = os.environ.get("CNNLAB_LESSON_QUICK", "0") == "1"
EPOCHS = 1 if QUICK else 5
SUBSET = 3000 if QUICK else None  # imágenes de entrenamiento (None: la división 50k/10k de la lección)
RUNS = Path(os.environ.get("CNNLAB_LESSON_RUNS", "runs"))

DIGITS = ["digit_0.jpg", "digit_1.jpg", "digit_2.jpg", "digit_3.jpg", "digit_3_chalk.jpg", "digit_4.jpg",
          "digit_5.jpg", "digit_6.jpg", "digit_7.jpg", "digit_7_transparent.png", "digit_8.jpg", "digit_9.jpg"]
IMAGES = Path("../images")  # junto a los cuadernos, en el repositorio
if not all((IMAGES / name).is_file() for name in DIGITS):  # una copia suelta (Colab): se descargan una vez
    import urllib.request

    IMAGES = Path("lesson_images")
    IMAGES.mkdir(exist_ok=True)
    for name in DIGITS:
        if not (IMAGES / name).is_file():
            urllib.request.urlretrieve(
                f"https://raw.githubusercontent.com/cnnlab/cnnlab/main/docs/lesson/images/{name}", IMAGES / name)

print("datos:", DATA_DIR, "| modo rápido:", QUICK, "| épocas:", EPOCHS)

# %%
import math

import matplotlib.pyplot as plt
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0);  # los mismos números aleatorios en cada ejecución

# %% [markdown]
# ## 1. Convolución y *pooling*
#
# ### 1.1 Una convolución a mano
#
# Una convolución 2D desliza un filtro pequeño (un *kernel*) sobre la imagen. En cada posición
# multiplica el filtro por el trozo de imagen que tiene debajo, elemento a elemento, y lo suma
# todo (más un sesgo) en un único número. Una entrada de 4x4 y un kernel de 2x2, a mano:

# %%
image = torch.tensor([[1., 2., 0., 1.],
                      [0., 1., 3., 1.],
                      [2., 0., 1., 0.],
                      [1., 1., 0., 2.]])
kernel = torch.tensor([[1., 0.],
                       [0., -1.]])

by_hand = torch.zeros(3, 3)  # un kernel de 2x2 cabe en 4 - 2 + 1 = 3 posiciones por lado
for i in range(3):
    for j in range(3):
        patch = image[i:i + 2, j:j + 2]
        by_hand[i, j] = (patch * kernel).sum()
print(by_hand)

# F.conv2d quiere entradas (N, C, H, W) y kernels (salida, entrada, kH, kW)
torch_result = F.conv2d(image.reshape(1, 1, 4, 4), kernel.reshape(1, 1, 2, 2))[0, 0]
assert torch.equal(by_hand, torch_result)
# arriba a la izquierda: 1*1 + 2*0 + 0*0 + 1*(-1) = 0; la de su derecha: 2*1 + 0*0 + 1*0 + 3*(-1) = -1

# %% [markdown]
# **¿Correlación cruzada o convolución?** Lo que PyTorch (y toda biblioteca de aprendizaje
# profundo) llama convolución *no* le da la vuelta al kernel: matemáticamente es una
# **correlación cruzada**. La convolución del procesado de señal primero invierte el kernel en
# las dos direcciones. Con un kernel aprendido da igual (la red aprende el kernel invertido), pero
# importa cuando copias un filtro de un libro. SciPy tiene las dos:

# %%
from scipy.signal import convolve2d, correlate2d

print("correlate2d == F.conv2d:            ", torch.equal(torch.from_numpy(correlate2d(image.numpy(), kernel.numpy(), mode="valid")), by_hand))
flipped = torch.flip(kernel, dims=[0, 1])
true_conv = F.conv2d(image.reshape(1, 1, 4, 4), flipped.reshape(1, 1, 2, 2))[0, 0]
print("convolve2d == F.conv2d(invertido):", torch.equal(torch.from_numpy(convolve2d(image.numpy(), kernel.numpy(), mode="valid")), true_conv))

# %% [markdown]
# **Varios canales de entrada.** Una imagen en color tiene 3 canales; los mapas dentro de una red
# tienen muchos. Entonces un filtro tiene un kernel 2D *por cada canal de entrada*: cada uno se
# aplica a su canal y los resultados se **suman** en un único mapa de salida. Con 2 canales de entrada:

# %%
two_channels = torch.stack([image, torch.ones(4, 4)])  # (C=2, 4, 4): nuestra imagen y un plano de unos
kernel_2ch = torch.stack([kernel, torch.full((2, 2), 0.5)])  # (entrada=2, 2, 2): un kernel por canal

per_channel = [F.conv2d(two_channels[c].reshape(1, 1, 4, 4), kernel_2ch[c].reshape(1, 1, 2, 2))[0, 0] for c in range(2)]
together = F.conv2d(two_channels.unsqueeze(0), kernel_2ch.unsqueeze(0))[0, 0]  # pesos (salida=1, entrada=2, 2, 2)
print(together)
assert torch.equal(together, per_channel[0] + per_channel[1])  # el segundo canal suma 4 * 0,5 = 2 en todas partes

# %% [markdown]
# ### 1.2 `nn.Conv2d`
#
# Una capa aprende muchos filtros a la vez. Cada filtro produce un *canal* de salida, también
# llamado *mapa de características* (*feature map*).
#
# `nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1)`:
#
# | argumento | significado |
# |---|---|
# | `in_channels` | canales de la entrada: 1 para una imagen en gris, 3 para RGB |
# | `out_channels` | cuántos filtros aprende la capa = canales de la salida |
# | `kernel_size` | lado de cada filtro (5 significa 5x5) |
# | `stride` | cuántos píxeles avanza el filtro entre una posición y la siguiente; con 2, el tamaño se reduce más o menos a la mitad |
# | `padding` | filas y columnas de ceros que se añaden alrededor de la entrada para no perder el borde |
# | `dilation` | separación entre los elementos del filtro: con 2, un filtro 3x3 abarca una zona de 5x5 |
#
# Los pesos tienen forma `(out_channels, in_channels, kernel, kernel)`: cada filtro mira
# *todos* los canales de la entrada, como arriba.

# %%
conv = nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5, stride=1, padding=2)
print("pesos:", tuple(conv.weight.shape), " sesgos:", tuple(conv.bias.shape))

x = torch.randn(1, 1, 28, 28)  # un lote con una imagen gris de 28x28: (N, C, H, W)
print("entrada:", tuple(x.shape))
print("salida: ", tuple(conv(x).shape))

# %% [markdown]
# ### 1.3 ¿De qué tamaño es la salida?
#
# Para una entrada de lado $n$, un kernel $k$, un paso (*stride*) $s$, un relleno (*padding*) $p$
# y una dilatación $d$:
#
# $$n_\text{salida} = \left\lfloor \frac{n + 2p - d\,(k-1) - 1}{s} \right\rfloor + 1$$
#
# Escribimos la fórmula nosotros mismos y la comparamos con otras dos fuentes: la forma de un
# tensor real después de pasar por la capa y el explorador de capas de cnnlab (`cnnlab.models.shapes`).

# %%
from cnnlab.models.shapes import conv_output_size, pool_output_size


def out_size(n, k, s=1, p=0, d=1):
    return math.floor((n + 2 * p - d * (k - 1) - 1) / s) + 1


cases = [  # (kernel, stride, padding, dilation)
    (5, 1, 2, 1),  # la primera capa de LeNet: conserva el tamaño
    (5, 1, 0, 1),  # sin relleno: se pierden k-1 = 4 píxeles
    (3, 2, 1, 1),  # stride 2: más o menos la mitad
    (3, 1, 0, 2),  # dilatación 2: el kernel 3x3 abarca 5x5
    (7, 3, 1, 1),  # un caso en el que el redondeo hacia abajo importa
]
n = 28
print(f"{'k':>2} {'s':>2} {'p':>2} {'d':>2} | fórmula  tensor  cnnlab")
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
# El *pooling* no tiene pesos: resume cada ventana con un solo número. `nn.MaxPool2d(kernel_size)`
# se queda con el valor más grande de cada ventana. Sus argumentos son casi los mismos que los de
# la convolución (`kernel_size`, `stride`, `padding`, `dilation`), con dos diferencias:
#
# - `stride` vale por defecto lo mismo que `kernel_size`, así que las ventanas no se solapan y
#   `MaxPool2d(2)` divide entre dos el alto y el ancho;
# - `ceil_mode=True` redondea hacia arriba en lugar de hacia abajo, de modo que se conserva una
#   última ventana incompleta.
#
# Un ejemplo de 4x4 a mano: partimos la matriz en cuatro ventanas de 2x2 y nos quedamos con el
# máximo de cada una.

# %%
t = torch.tensor([[1., 3., 2., 4.],
                  [5., 6., 1., 2.],
                  [7., 2., 9., 0.],
                  [3., 4., 1., 8.]])
pooled = nn.MaxPool2d(2)(t.reshape(1, 1, 4, 4))
print(pooled[0, 0])
# ventana superior izquierda [1, 3, 5, 6] -> 6, superior derecha [2, 4, 1, 2] -> 4,
# inferior izquierda [7, 2, 3, 4] -> 7, inferior derecha [9, 0, 1, 8] -> 9
assert pooled[0, 0].tolist() == [[6., 4.], [7., 9.]]

# %% [markdown]
# La misma fórmula del tamaño de salida vale para el *pooling* (redondeando hacia abajo, o hacia
# arriba si `ceil_mode=True`):

# %%
for size, k, s, ceil in [(28, 2, None, False), (10, 2, None, False), (7, 2, None, False), (7, 2, None, True), (28, 3, 2, False)]:
    layer = nn.MaxPool2d(k, stride=s, ceil_mode=ceil)
    real = layer(torch.zeros(1, 1, size, size)).shape[-1]
    lib = pool_output_size(size, k, stride=s, ceil_mode=ceil)
    print(f"MaxPool2d({k}, stride={s}, ceil_mode={ceil}) sobre {size}x{size} -> {real}x{real}  (cnnlab: {lib})")
    assert real == lib

# %% [markdown]
# ### 1.5 Qué «ve» un filtro
#
# La red aprende sus filtros, pero también podemos escribir uno a mano. El kernel 3x3 de abajo
# (un filtro de Sobel) responde con fuerza donde la intensidad cambia de izquierda a derecha, es
# decir, en los **bordes verticales**; su traspuesto responde a los bordes horizontales. Lo aplicamos
# a un dígito de MNIST con `F.conv2d` (la versión funcional de `nn.Conv2d`: los pesos se le pasan
# como argumento).
#
# La línea que carga MNIST se explica en la sección 2; la primera vez descarga el conjunto de datos.

# %%
from torchvision import datasets, transforms

train_set = datasets.MNIST(root=DATA_DIR, train=True, download=True, transform=transforms.ToTensor())
digit, label = train_set[0]  # un tensor de forma (1, 28, 28) con valores en [0, 1]

vertical = torch.tensor([[-1., 0., 1.],
                         [-2., 0., 2.],
                         [-1., 0., 1.]])
kernels = torch.stack([vertical, vertical.T]).unsqueeze(1)  # (salida=2, entrada=1, 3, 3)
maps = F.conv2d(digit.unsqueeze(0), kernels, padding=1)  # (1, 2, 28, 28)
after_pool = F.max_pool2d(F.relu(maps), 2)  # (1, 2, 14, 14)
print("mapas de características:", tuple(maps.shape), "-> tras ReLU + max-pool:", tuple(after_pool.shape))

fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
lim = maps.abs().max().item()
panels = [
    (digit[0], f"dígito ({label})", dict(cmap="gray")),
    (maps[0, 0], "bordes verticales", dict(cmap="coolwarm", vmin=-lim, vmax=lim)),
    (maps[0, 1], "bordes horizontales", dict(cmap="coolwarm", vmin=-lim, vmax=lim)),
    (after_pool[0, 0], "verticales, ReLU + pool (14x14)", dict(cmap="gray")),
]
for ax, (img, title, style) in zip(axes, panels):
    ax.imshow(img, **style)
    ax.set_title(title)
    ax.axis("off")
fig.tight_layout()

# %% [markdown]
# El rojo y el azul marcan cambios de signo contrario (de oscuro a claro o de claro a oscuro).
# Tras la ReLU solo quedan las respuestas positivas, y el *max-pool* las conserva en un mapa de la
# mitad de tamaño: la red sigue sabiendo *que* hay un borde en esa zona, aunque con menos detalle
# sobre *dónde exactamente*.

# %% [markdown]
# ### Ejercicios (predice y después ejecuta)
#
# 1. `nn.Conv2d(3, 8, kernel_size=3)`: ¿cuántos parámetros tiene?
# 2. ¿De qué tamaño es la salida de `nn.Conv2d(1, 1, kernel_size=3, stride=2, padding=1)` sobre una imagen de 28x28?
# 3. En la sección 1.1, ¿en qué se convierte la salida si el kernel es `[[0, 0], [0, 1]]`?
#
# <details><summary>Soluciones</summary>
#
# 1. 8 filtros de 3 x 3 x 3 pesos más 8 sesgos: 8 * 27 + 8 = **224**
#    (`sum(p.numel() for p in nn.Conv2d(3, 8, 3).parameters())`).
# 2. floor((28 + 2 - 2 - 1) / 2) + 1 = **14**: `out_size(28, 3, s=2, p=1)`.
# 3. Cada salida toma el píxel de abajo a la derecha de su trozo: la entrada sin su primera fila
#    ni su primera columna, `image[1:, 1:]`.
#
# </details>

# %% [markdown]
# ## 2. torchvision
#
# `torchvision` reúne lo necesario para trabajar con imágenes: conjuntos de datos (`datasets`),
# transformaciones (`transforms`), lectura y escritura de ficheros (`io`) y arquitecturas
# conocidas (`models`).
#
# ### 2.1 El conjunto MNIST
#
# `datasets.MNIST` lee los ficheros originales de `root`; con `download=True` los descarga antes
# si todavía no están (y no hace nada si ya están). `transforms.ToTensor()` convierte cada imagen
# en un tensor `float32` de forma `(1, 28, 28)` con valores entre 0 y 1.

# %%
train_set = datasets.MNIST(root=DATA_DIR, train=True, download=True, transform=transforms.ToTensor())
test_set = datasets.MNIST(root=DATA_DIR, train=False, download=True, transform=transforms.ToTensor())
print(len(train_set), "imágenes de entrenamiento,", len(test_set), "de test")

image, label = train_set[0]
print("forma:", tuple(image.shape), "tipo:", image.dtype, "rango:", (image.min().item(), image.max().item()), "etiqueta:", label)
print("clases:", train_set.classes)

# %%
fig, axes = plt.subplots(4, 8, figsize=(10, 5.6))
for i, ax in enumerate(axes.flat):
    image, label = train_set[i]
    ax.imshow(image[0], cmap="gray")
    ax.set_title(str(label))
    ax.axis("off")
fig.suptitle("Las 32 primeras imágenes de entrenamiento y sus etiquetas")
fig.tight_layout()

# %% [markdown]
# La misma clase de cuadrícula en una llamada: `cnnlab.show_batch` dibuja `n` imágenes de
# entrenamiento al azar con su etiqueta (la misma `seed`, las mismas imágenes). También acepta tus
# propios `(images, labels)`.

# %%
import cnnlab

cnnlab.show_batch("mnist", n=32, data_dir=DATA_DIR, seed=0)

# %% [markdown]
# ### 2.2 Leer imágenes: tu propia foto
#
# `torchvision.io` lee ficheros PNG y JPEG como tensores `uint8` de forma `(C, H, W)`.
# Estas son las fotos de dígitos escritos a mano que acompañan a la lección (en `IMAGES`): no son
# dígitos de MNIST, sino lo que te da un móvil: papel gris con luz desigual, un dígito de tiza
# en una pizarra y un PNG con fondo transparente.

# %%
from torchvision.io import ImageReadMode, read_image

photos = [IMAGES / name for name in DIGITS]
first = read_image(str(photos[0]))
print(photos[0].name, "->", tuple(first.shape), first.dtype)

fig, axes = plt.subplots(1, len(photos), figsize=(14, 1.8))
for ax, path in zip(axes, photos):
    ax.imshow(read_image(str(path), mode=ImageReadMode.RGB).permute(1, 2, 0))  # (H, W, C) para matplotlib
    ax.set_title(path.stem.removeprefix("digit_"), fontsize=8)
    ax.axis("off")

# %% [markdown]
# Un modelo entrenado con MNIST solo conoce dígitos que se parecen a los de MNIST, y MNIST se
# construyó de una forma precisa: **tinta clara sobre fondo negro**, el dígito **recortado** a su
# tinta, **escalado para caber en una caja de 20x20** (conservando su forma) y pegado en 28x28 de
# modo que su **centro de masa** quede en el medio. Si se encoge la foto entera a 28x28 sale un
# dígito gris y pequeño sobre fondo gris, descentrado: el modelo nunca ha visto nada parecido.
#
# cnnlab prepara las fotos exactamente así (`cnnlab predict` y `cnnlab serve` lo usan).
# `mnist_steps` ejecuta ese mismo código y guarda la imagen tras cada paso, para que podamos verlo:
#
# 1. **gris**: un solo canal; un fondo transparente se rellena con el color que contrasta con la
#    tinta (blanco detrás de tinta negra), así que no se vuelve negro;
# 2. **invertida si hace falta**: tinta oscura sobre papel claro pasa a clara sobre oscuro (el dígito de tiza se deja igual);
# 3. **fondo a 0** y la tinta estirada a todo el contraste (el grano del papel por debajo de un umbral desaparece);
# 4. **recortada** a la tinta;
# 5. **encajada en 20x20**, conservando la proporción;
# 6. **centrada por masa** en 28x28: lo que ve la red.

# %%
from cnnlab.data.images import mnist_steps

titles = {"decoded": "gris", "inverted": "invertida", "not_inverted": "sin invertir", "stretched": "fondo 0",
          "cropped": "recortada", "fitted": "encajada en 20x20", "centred": "centrada por masa"}
examples = [IMAGES / "digit_4.jpg", IMAGES / "digit_3_chalk.jpg", IMAGES / "digit_7_transparent.png"]
fig, axes = plt.subplots(len(examples), 6, figsize=(12, 2.2 * len(examples)))
for row, path in zip(axes, examples):
    for ax, (key, pixels) in zip(row, mnist_steps(path).items()):
        ax.imshow(pixels, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{titles[key]}\n{pixels.shape[0]}x{pixels.shape[1]}", fontsize=9)
        ax.axis("off")
fig.tight_layout()

# %% [markdown]
# `preparar` devuelve el último paso como el tensor que espera el modelo: `(1, 28, 28)`, valores
# en [0, 1], como da `ToTensor()` para MNIST. Pruébalo con una foto de un dígito tuyo.

# %%
def preparar(path):
    """Un fichero de imagen -> el tensor float (1, 28, 28) que espera un modelo entrenado con MNIST."""
    return torch.from_numpy(mnist_steps(path)["centred"] / 255).unsqueeze(0)


my_pictures = torch.stack([preparar(p) for p in photos])  # (12, 1, 28, 28): cambia photos por tus ficheros
true_labels = [int(p.stem.split("_")[1]) for p in photos]  # el dígito está en el nombre del fichero
print(tuple(my_pictures.shape), my_pictures.dtype)

fig, axes = plt.subplots(1, len(photos), figsize=(14, 1.6))
for ax, x, y in zip(axes, my_pictures, true_labels):
    ax.imshow(x[0], cmap="gray")
    ax.set_title(str(y))
    ax.axis("off")
fig.suptitle("Lo que verá la red")

# %% [markdown]
# ### 2.3 Transformaciones
#
# Un `transforms.Compose` encadena transformaciones que se aplican a cada imagen al leerla.
# Una cadena típica para MNIST:
#
# - `RandomRotation(10)`: gira la imagen un ángulo aleatorio entre -10 y 10 grados. Es *aumento de
#   datos* (*data augmentation*): en cada época la red ve versiones algo distintas del mismo dígito;
# - `ToTensor()`: de imagen PIL a tensor en [0, 1];
# - `Normalize((0.1307,), (0.3081,))`: resta la media y divide entre la desviación típica de los
#   píxeles de entrenamiento de MNIST, para que las entradas queden centradas en torno a 0.
#
# ¿De dónde salen 0,1307 y 0,3081? Vamos a calcularlos:

# %%
pixels = train_set.data.float() / 255  # las 60.000 imágenes en un solo tensor uint8, escaladas a [0, 1]
print(f"media {pixels.mean():.4f}, desviación típica {pixels.std():.4f}")

# %%
augment = transforms.Compose([
    transforms.RandomRotation(10),
    transforms.ToTensor(),
    transforms.Normalize((0.1307,), (0.3081,)),
])

raw_set = datasets.MNIST(root=DATA_DIR, train=True, download=True)  # sin transformación: imágenes PIL
pil_image, label = raw_set[0]

fig, axes = plt.subplots(1, 8, figsize=(12, 2))
for ax in axes:
    variant = augment(pil_image)  # un giro aleatorio nuevo en cada llamada
    ax.imshow(variant[0], cmap="gray")
    ax.axis("off")
fig.suptitle(f"8 versiones aumentadas del mismo {label}")
fig.tight_layout()
print(f"valores tras Normalize: de {variant.min():.2f} a {variant.max():.2f}")

# %% [markdown]
# ### 2.4 Los modelos clásicos
#
# `torchvision.models` contiene las arquitecturas que marcaron la historia de las CNN. Con
# `weights=None` obtenemos la arquitectura con pesos aleatorios: no se descarga nada. Están
# pensadas para imágenes en color de ImageNet, de 224x224, y 1.000 clases; de ahí su tamaño
# comparado con los ~62.000 parámetros de LeNet-5. Lo que aportó cada una:
#
# - **AlexNet (2012)**: ReLU, *dropout* y entrenamiento en GPU; ganó ImageNet con mucha ventaja y desató la ola del aprendizaje profundo.
# - **VGG (2014)**: profundidad a base de pilas de convoluciones pequeñas de 3x3, un bloque simple repetido.
# - **GoogLeNet (2014)**: módulos *Inception* (ramas paralelas de 1x1, 3x3 y 5x5) y convoluciones 1x1 baratas: profunda pero ligera.
# - **ResNet (2015)**: conexiones *residuales* (atajos), que permiten entrenar redes de más de 100 capas.
#
# (GoogLeNet tiene dos clasificadores auxiliares que solo se usan durante el entrenamiento; los
# dejamos fuera con `aux_logits=False`, e `init_weights=False` evita una inicialización lenta que
# aquí no necesitamos.)

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
    print(f"{name:<18} {n_params:>12,} parámetros")
del classics  # solo VGG-11 ocupa medio gigabyte de memoria

# %% [markdown]
# cnnlab tiene su propio registro de modelos, todos adaptados a imágenes pequeñas (MNIST, CIFAR-10...):

# %%
import cnnlab

cnnlab.list_models()

# %% [markdown]
# ### Ejercicios (predice y después ejecuta)
#
# 1. `read_image` sobre `digit_7_transparent.png` (sin `mode=`): ¿cuántos canales?
# 2. ¿Qué vería el modelo si solo encogiéramos la foto a 28x28 (sin recortar ni invertir)?
#    Predice y después mira: `transforms.functional.resize(read_image(str(IMAGES / "digit_4.jpg"), mode=ImageReadMode.GRAY), [28, 28])`.
# 3. ¿Qué paso de MNIST hace que un dígito escrito pequeño en una esquina de la hoja se parezca a uno escrito grande en el centro?
#
# <details><summary>Soluciones</summary>
#
# 1. **4**: rojo, verde, azul y alfa (la transparencia).
# 2. Un dígito pequeño gris oscuro sobre un fondo gris más claro, sin centrar: la polaridad
#    contraria a MNIST y mucho menos contraste. Un modelo entrenado con MNIST suele fallar.
# 3. Recortar a la tinta y encajarla en 20x20 (el tamaño) y después centrar por masa (la posición).
#
# </details>

# %% [markdown]
# ## 3. LeNet-5
#
# LeNet-5 (Yann LeCun, 1998) es la antecesora de las CNN modernas. Tiene dos partes:
#
# - `features`: dos etapas convolución -> ReLU -> *max-pool* que extraen patrones locales;
# - `classifier`: aplana los mapas en un vector y lo clasifica con tres capas lineales.
#
# Escribirla como subclase de `nn.Module` con bloques `nn.Sequential` la hace fácil de leer:

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
# **En qué se diferencia esta LeNet de la original de 1998.** Esta es la forma moderna de escribirla. La original:
#
# - recibía imágenes de 32x32 (los dígitos de MNIST con un margen de 2 píxeles); aquí el `padding=2` de la primera convolución hace ese papel;
# - usaba una **tanh** escalada en lugar de ReLU, y ***pooling* por promedio** («submuestreo», con
#   un peso y un sesgo aprendidos) en lugar de *max-pooling*;
# - conectaba cada uno de los 16 mapas de la segunda convolución solo con algunos de los 6 mapas
#   anteriores (una tabla fija, para ahorrar cálculo y romper la simetría); aquí cada filtro ve los 6;
# - terminaba en **unidades RBF** euclídeas en lugar de una capa lineal con *softmax* y entropía cruzada.
#
# El modelo `lenet5-classic` de cnnlab es lo más parecido en espíritu que se entrena con la receta
# actual (tanh y *pooling* por promedio, con los mismos tamaños de capa):
# `cnnlab.train("lenet5-classic", ...)`, o compáralos con `cnnlab compare` para ver qué aportan la
# ReLU y el *max-pooling*.

# %% [markdown]
# ### 3.1 Formas, parámetros y multiplicaciones-sumas
#
# `cnnlab.summarize` pasa una imagen por el modelo y lista, capa a capa, la forma de la salida,
# los parámetros y las multiplicaciones-sumas (MACs, *multiply-accumulate*: el número de
# multiplicaciones, cada una con su suma, que hacen las convoluciones y las capas lineales para
# una imagen).

# %%
summary = cnnlab.summarize(model, (1, 28, 28))
summary

# %% [markdown]
# Comprobemos los totales a mano. Una convolución tiene `out * (in * k * k) + out` parámetros
# (pesos más sesgos) y hace `out * in * k * k` multiplicaciones por cada píxel de salida; una capa
# lineal tiene `out * in + out` parámetros y hace `out * in` multiplicaciones.

# %%
params_by_hand = (
    (6 * 1 * 5 * 5 + 6)  # conv1
    + (16 * 6 * 5 * 5 + 16)  # conv2
    + (120 * 400 + 120) + (84 * 120 + 84) + (10 * 84 + 10)  # las tres capas lineales
)
macs_by_hand = (
    28 * 28 * 6 * (1 * 5 * 5)  # conv1: 6 mapas de 28x28
    + 10 * 10 * 16 * (6 * 5 * 5)  # conv2: 16 mapas de 10x10
    + 400 * 120 + 120 * 84 + 84 * 10
)
n_params = sum(p.numel() for p in model.parameters())
print(f"parámetros: a mano {params_by_hand:,} | PyTorch {n_params:,} | resumen {summary.total_params:,}")
print(f"MACs:       a mano {macs_by_hand:,} | resumen {summary.total_macs:,}")
assert params_by_hand == n_params == summary.total_params

# %% [markdown]
# ### 3.2 Ver las formas con *forward hooks*
#
# Un *forward hook* es una función que PyTorch llama cada vez que una capa termina su `forward`.
# Es el mecanismo que usan herramientas como `summarize`, y ayuda mucho a depurar formas.
# Enganchamos una función que imprime a cada capa «hoja» (las que no contienen otras capas):

# %%
def show_shape(module, inputs, output):
    print(f"{module.__class__.__name__:<10} {str(tuple(inputs[0].shape)):<16} -> {tuple(output.shape)}")


handles = [m.register_forward_hook(show_shape) for m in model.modules() if not list(m.children())]
with torch.no_grad():
    model(torch.zeros(1, 1, 28, 28))
for h in handles:  # quitamos los hooks para que no impriman en cada pasada de aquí en adelante
    h.remove()

# %% [markdown]
# ### Ejercicios (predice y después ejecuta)
#
# 1. ¿Cuántos parámetros tendría la primera convolución con 3 canales de entrada (imágenes en color)?
# 2. Sin `padding=2`, ¿qué forma saldría de `features` para una imagen de 28x28, y en qué tendría
#    que cambiar la primera capa lineal?
# 3. ¿Qué capa tiene la mayor parte de los parámetros?
#
# <details><summary>Soluciones</summary>
#
# 1. 6 * (3 * 5 * 5) + 6 = **456** (en lugar de 156).
# 2. 28 -> 24 -> 12 -> 8 -> 4: `(16, 4, 4)`, así que `nn.Linear(16 * 4 * 4, 120)`. Compruébalo con
#    `cnnlab.summarize` sobre una copia de la clase sin el *padding*.
# 3. La primera capa lineal: 400 * 120 + 120 = **48.120** de los 61.706.
#
# </details>

# %% [markdown]
# ## 4. Entrenar LeNet-5
#
# ### 4.1 Con pytorch-ignite, con el bucle a la vista
#
# Primero dividimos las 60.000 imágenes de entrenamiento en **50.000 para entrenar** y **10.000
# para validar**. La validación sirve para elegir la mejor época; el conjunto de test (otras
# 10.000 imágenes) se reserva para la evaluación final. La división usa su propio generador con
# semilla, así que siempre es la misma.

# %%
from torch.utils.data import DataLoader, Subset, random_split

train_part, val_part = random_split(train_set, [50000, 10000], generator=torch.Generator().manual_seed(1234))
if QUICK:  # solo comprobar que funciona: unos pocos miles de imágenes
    train_part, val_part = Subset(train_part, range(3000)), Subset(val_part, range(1000))
print(len(train_part), "imágenes de entrenamiento,", len(val_part), "de validación")

# %% [markdown]
# La celda de abajo hace todo el entrenamiento, así que ejecutarla otra vez empieza de cero (un
# modelo nuevo, manejadores nuevos, una carpeta de *checkpoints* vacía) en lugar de apilar un
# segundo juego de manejadores sobre el primero:
#
# - el **paso de entrenamiento** es una función normal: recibe el `Engine` y un lote, pasa el lote
#   al dispositivo y hace pasada hacia delante -> pérdida -> pasada hacia atrás -> paso del
#   optimizador. ignite la llama con cada lote y se ocupa de las épocas y de los eventos. La
#   pérdida usa `reduction="sum"` (la elección de la lección; con Adam la escala del gradiente
#   apenas importa); el paso devuelve la media por imagen, que se lee mejor;
# - `create_supervised_evaluator` construye un `Engine` que ejecuta el modelo sin gradientes y
#   actualiza unas **métricas**. Cuidado: la métrica `Loss` de ignite espera la pérdida *media*
#   del lote (ella misma la multiplica por el tamaño del lote), así que recibe un
#   `nn.CrossEntropyLoss()` con la reducción por defecto;
# - tras cada época evaluamos en entrenamiento y validación, y el `ModelCheckpoint` guarda en disco
#   solo el mejor modelo (`n_saved=1`) según su *puntuación*: la pérdida de validación cambiada de
#   signo (más alta es mejor);
# - los pesos iniciales del modelo y el orden de los lotes salen de generadores con semilla, así
#   que repetir la celda da los mismos números en la misma máquina.

# %%
import shutil

from ignite.engine import Engine, Events, create_supervised_evaluator
from ignite.handlers import ModelCheckpoint, global_step_from_engine
from ignite.metrics import Accuracy, Loss

torch.manual_seed(0)  # los pesos iniciales
model = Lenet5().to(DEVICE)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
criterion = nn.CrossEntropyLoss(reduction="sum")
train_loader = DataLoader(train_part, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
train_eval_loader = DataLoader(train_part, batch_size=256)  # lotes más grandes solo evalúan más deprisa
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
shutil.rmtree(checkpoint_dir, ignore_errors=True)  # la carpeta propia de esta celda: repetirla empieza limpia
checkpoint = ModelCheckpoint(
    checkpoint_dir,
    filename_prefix="best",
    n_saved=1,
    score_function=lambda e: -e.state.metrics["loss"],
    score_name="neg_val_loss",
    global_step_transform=global_step_from_engine(trainer),  # la época, en el nombre del fichero
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
    print(f"época {engine.state.epoch}: entrenamiento pérdida {tr['loss']:.4f} acierto {tr['accuracy']:.4f} | "
          f"validación pérdida {va['loss']:.4f} acierto {va['accuracy']:.4f}")


trainer.run(train_loader, max_epochs=EPOCHS);

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
epochs = [h["epoch"] for h in history]
for ax, key, name in [(axes[0], "loss", "pérdida (entropía cruzada)"), (axes[1], "acc", "acierto")]:
    ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="entrenamiento")
    ax.plot(epochs, [h[f"val_{key}"] for h in history], "o-", label="validación")
    ax.set_xlabel("época")
    ax.set_ylabel(name)
    ax.set_xticks(epochs)  # una marca por época: números enteros
    ax.legend()
fig.tight_layout()

# %% [markdown]
# El *checkpoint* guardó la época con la menor pérdida de validación. La cargamos de nuevo en el modelo:

# %%
best_file = checkpoint.last_checkpoint
print("mejor checkpoint:", Path(best_file).name)
model.load_state_dict(torch.load(best_file, map_location=DEVICE))
model.eval();

# %% [markdown]
# ¿Y las fotos de la sección 2.2? El modelo recibe un lote: las doce a la vez.

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
fig.suptitle(f"el modelo de ignite: {right}/{len(photos)} aciertos (predicción y probabilidad; en rojo, los fallos)")
print(f"{right}/{len(photos)} fotos acertadas")

# %% [markdown]
# ### 4.2 Lo mismo con una sola llamada a cnnlab
#
# **¿Qué tasa de aprendizaje?** La lección usa Adam con 1e-3. La *prueba de rango de la tasa de
# aprendizaje* (Leslie Smith; `lr_find` de fastai) entrena una copia de la red durante unos cientos de
# lotes mientras la tasa crece de 1e-7 a 10, y anota la pérdida. Donde la pérdida baja más deprisa
# hay una buena tasa; donde se dispara, el entrenamiento diverge. Tu `Lenet5()` no cambia y no se
# escribe nada.

# %%
torch.manual_seed(0)  # los pesos iniciales de la copia que se prueba
encontrada = cnnlab.lr_find(Lenet5(), "mnist", data_dir=DATA_DIR, subset=SUBSET)
print(encontrada.text())
encontrada.plot()

# %% [markdown]
# Ahora, el entrenamiento en sí. `cnnlab.train` sigue la misma receta (la división 50.000/10.000 con semilla 1234, lotes de 32,
# Adam con lr 1e-3, pérdida sumada, el mejor *checkpoint* según la pérdida de validación) y además
# evalúa el mejor modelo sobre el conjunto de test. Acepta tu propio `nn.Module` o el nombre de un
# modelo registrado, y usa la GPU si la hay. Todo se escribe en `run_dir`, y `overwrite=True`
# permite volver a ejecutar la celda. Tu módulo se entrena desde los pesos que tiene, así que
# fijamos la semilla antes de construirlo.

# %%
torch.manual_seed(0)  # los pesos iniciales de nuestra Lenet5
run = cnnlab.train(Lenet5(), data="mnist", data_dir=DATA_DIR, run_dir=RUNS / "lenet5-own",
                   epochs=EPOCHS, subset=SUBSET, overwrite=True)
run

# %% [markdown]
# El historial tiene un diccionario por época, con las mismas métricas que imprimimos a mano con ignite:

# %%
run.history

# %%
print("mejor época:", run.best_epoch, "| acierto en test:", run.test.accuracy)

# %% [markdown]
# **¿Por qué estos números no son los que imprimió ignite?** Misma receta, misma división, mismos
# pesos iniciales y, aun así, los dos entrenamientos difieren en las últimas cifras. Los lotes
# llegan en otro orden aleatorio (cnnlab los saca de su propio generador con semilla, en el
# dispositivo), y las sumas en coma flotante hechas en otro orden redondean distinto; tras miles
# de pasos, los dos son modelos distintos de la misma calidad. Lo mismo ocurre entre máquinas: el
# mismo código da cifras algo distintas en una CPU con otras instrucciones vectoriales (AVX2,
# AVX-512) o en una GPU. Las semillas hacen que un entrenamiento se repita *en una máquina*; no
# hacen que todas las máquinas coincidan.
#
# La LeNet-5 del registro funciona igual, por su nombre:
#
# ```python
# run = cnnlab.train("lenet5", data="mnist", data_dir=DATA_DIR, run_dir=RUNS / "lenet5", epochs=EPOCHS)
# ```
#
# Un entrenamiento se puede **volver a cargar** más tarde: `cnnlab.load` da un *predictor*, el
# modelo más todo lo necesario para darle fotos sin preparar. Para un modelo definido por tu propia
# clase, cnnlab necesita una instancia nueva en la que poner los pesos del mejor *checkpoint*
# (`best.pt`). `predict` recibe nombres de fichero y los prepara como en la sección 2.2 (es lo que
# ejecuta la orden `cnnlab predict`):

# %%
predictor = cnnlab.load(run.path, model=Lenet5())
predictions = predictor.predict(photos, top_k=1)
right = sum(int(p.label) == y for p, y in zip(predictions, true_labels))
print(f"el modelo de cnnlab: {right}/{len(photos)} fotos acertadas")
for path, p in zip(photos, predictions):
    print(f"{path.name:<24} {p.label} ({p.prob:.3f})")

# %% [markdown]
# ### Ejercicios (predice y después ejecuta)
#
# 1. Ejecuta la celda de ignite una segunda vez: ¿cambiarán las pérdidas impresas?
# 2. Cambia `torch.manual_seed(0)` por `torch.manual_seed(1)` en esa celda: ¿el acierto final de
#    validación será mayor, menor o más o menos el mismo?
# 3. Con `batch_size=128` en lugar de 32, ¿cuántos pasos del optimizador hay por época con las
#    50.000 imágenes de entrenamiento?
#
# <details><summary>Soluciones</summary>
#
# 1. No: la celda fija la semilla de los pesos y del orden de los lotes y empieza con un modelo
#    nuevo, así que en la misma máquina imprime los mismos números (en una GPU, casi: algunas
#    operaciones de la GPU suman en un orden que varía).
# 2. Más o menos el mismo (unas décimas arriba o abajo): otra semilla es otro sorteo igual de bueno.
# 3. ceil(50.000 / 128) = **391** (en lugar de 1.563): cuatro veces menos pasos, por eso un lote
#    más grande suele pedir una tasa de aprendizaje mayor.
#
# </details>

# %% [markdown]
# ## 5. El mejor modelo sobre el conjunto de test
#
# El acierto por sí solo dice poco: ¿*qué* dígitos falla el modelo y con cuáles los confunde?
#
# ### 5.1 A mano (el modelo de ignite)
#
# Predecimos las 10.000 imágenes de test y contamos, para cada clase verdadera (fila), cuántas
# imágenes fueron a cada clase predicha (columna): la **matriz de confusión**. La diagonal son los aciertos.

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

print(f"acierto en test del modelo de ignite: {(y_pred == y_true).mean():.4f}")
print(confusion_matrix(y_true, y_pred))

# %% [markdown]
# ### 5.2 Con cnnlab (el entrenamiento de la sección 4.2)
#
# `run.interpret()` (o `cnnlab.interpret(run)`) predice el conjunto de test con el mejor
# *checkpoint* una sola vez y guarda todo lo necesario para el análisis. Su acierto no es el del
# modelo de ignite: son dos entrenamientos distintos (sección 4.2).
#
# El **informe de clasificación** da, para cada clase, la *precisión* (de las imágenes predichas
# como esa clase, la fracción que lo son de verdad), la *exhaustividad* o *recall* (de las imágenes
# de esa clase, la fracción encontrada) y la puntuación *F1* (su media armónica); *support* es el
# número de imágenes de test de la clase.

# %%
interp = run.interpret()
print(interp.report)

# %% [markdown]
# La misma matriz de confusión que en 5.1, ahora como figura, y las confusiones más frecuentes como
# (clase verdadera, clase predicha, cuántas):

# %%
interp.plot_confusion_matrix()

# %%
interp.most_confused(5)

# %% [markdown]
# La galería de errores: ochos, cuatros y nueves mal clasificados, cada uno con lo que predijo el
# modelo y su probabilidad. Muchos son ambiguos de verdad, incluso para una persona.

# %%
interp.plot_misclassified(classes=[8, 4, 9], per_class=10)

# %% [markdown]
# Las imágenes con **mayor pérdida** son aquellas en las que el modelo estaba muy seguro y se
# equivocó: a menudo delatan dígitos mal escritos o incluso etiquetas erróneas en el conjunto de datos.

# %%
interp.plot_top_losses(9)

# %% [markdown]
# **Calibración**: cuando el modelo dice «seguro al 90 %», ¿acierta el 90 % de las veces? El
# diagrama de fiabilidad agrupa las imágenes de test según la confianza del modelo (15 intervalos)
# y dibuja, para cada intervalo, con qué frecuencia acertó de verdad: un modelo perfectamente
# calibrado sigue la diagonal. El **ECE** de su título (*expected calibration error*, error de
# calibración esperado) lo resume en un número: la diferencia entre confianza y acierto en cada
# intervalo, promediada pesando cada intervalo por su número de imágenes. 0 es perfecto; un ECE de
# 0,01 significa que la confianza del modelo se desvía, de media, en torno a un punto porcentual.

# %%
interp.plot_calibration()

# %% [markdown]
# Y las curvas de entrenamiento, época a época:

# %%
interp.plot_curves()

# %% [markdown]
# ### 5.3 Dentro de la red
#
# Hasta ahora hemos mirado la red desde fuera: entra una imagen y salen diez probabilidades.
# `cnnlab.explain` sigue **una imagen** a través de **tu propia LeNet-5** y guarda lo que produjo cada
# capa, la predicción y qué píxeles la decidieron. Usa los mismos *forward hooks* de la sección 3.2.
#
# Le damos el entrenamiento de la sección 4.2 y una de las fotos de la sección 2.2: el 4 sobre papel
# gris. Pon en su lugar la ruta de **un dígito que hayas dibujado tú** (en papel y fotografiado, o en
# cualquier programa de dibujo). Con la carpeta de un entrenamiento, cnnlab prepara el fichero igual
# que `cnnlab predict`, que es lo mismo que hace nuestra `preparar` de la sección 2.2; `model=Lenet5()`
# es una instancia nueva de nuestra clase en la que cargar los mejores pesos.

# %%
photo = IMAGES / "digit_4.jpg"  # o tu propio fichero: Path("mi_digito.png")
ex = cnnlab.explain(run.path, photo, model=Lenet5())
assert torch.equal(ex.input, preparar(photo))  # la red vio exactamente lo que preparó la sección 2.2
ex

# %% [markdown]
# `ex.activations` guarda la salida de cada capa de convolución, activación, *pooling* y lineal, con
# los **nombres de nuestro propio módulo** (`features.0` es el primer elemento de `self.features`).
# Cada forma es la que listó `cnnlab.summarize` en la sección 3.1, y los lados son los que da la
# fórmula de la sección 1.3, capa tras capa:

# %%
formas_31 = {row.name: tuple(row.output_shape) for row in summary.rows}  # la tabla de la sección 3.1
for name, out in ex.activations.items():
    print(f"{name:<14} {ex.kinds[name]:<10} {tuple(out.shape)}")
    assert tuple(out.shape) == formas_31[name]

side1 = conv_output_size(28, 5, padding=2)   # 28: el padding 2 conserva el tamaño
side2 = pool_output_size(side1, 2)           # 14: el pooling lo reduce a la mitad
side3 = conv_output_size(side2, 5)           # 10: un núcleo 5x5 sin padding pierde 4
side4 = pool_output_size(side3, 2)           # 5
assert tuple(ex.activations["features.0"].shape) == (6, side1, side1)
assert tuple(ex.activations["features.2"].shape) == (6, side2, side2)
assert tuple(ex.activations["features.3"].shape) == (16, side3, side3)
assert tuple(ex.activations["features.5"].shape) == (16, side4, side4)
print("16 x 5 x 5 =", 16 * side4 * side4, "números entran en la primera capa lineal")

# %% [markdown]
# Ahora podemos **ver** esos tensores. Cada fila es una capa y cada imagen pequeña un canal (la
# respuesta de un filtro). Los mapas de la primera convolución aún se parecen al dígito (bordes en
# varias direcciones, como los filtros hechos a mano de la sección 1.5); tras cada *pooling* miden
# la mitad, y los 16 mapas de la segunda convolución responden a combinaciones de trazos: partes de
# dígitos más que píxeles.

# %%
ex.plot_layers()

# %% [markdown]
# **Un núcleo, a mano.** Cada valor de un mapa es una suma: los pesos del núcleo por los valores de
# entrada que tiene debajo, más el sesgo (sección 1.1, con varios canales de entrada). `plot_kernel`
# muestra un canal de la segunda convolución en la posición donde responde con más fuerza: la ventana
# que leyó en cada uno de sus 6 canales de entrada, los 6 núcleos de 5x5 pesos y la suma.
# `ex.kernel(...)` da los mismos números.

# %%
channel = int(ex.activations["features.3"].flatten(1).amax(1).argmax())  # el más activo de los 16
k = ex.kernel("features.3", channel)
print("ventana", tuple(k["window"].shape), "x núcleo", tuple(k["weight"].shape),
      f"-> suma {k['sum']:.3f} + sesgo {k['bias']:.3f} = {k['value']:.3f}  (la capa calculó {k['recorded']:.3f})")
ex.plot_kernel("features.3", channel)

# %% [markdown]
# **¿Qué píxeles decidieron?** `ex.attribution` es un mapa de 28x28 (Integrated Gradients, calculado
# con captum): los píxeles rojos empujaron a la red hacia su respuesta y los azules en contra. Su suma
# es cuánto subió la puntuación de la clase desde una imagen negra hasta la tuya.

# %%
print(f"predicción: {ex.prediction.label} (probabilidad {ex.prediction.probability:.2f})")
ex.plot_attribution()

# %% [markdown]
# `target=` pregunta por otra clase: ¿qué trazos hablarían a favor de un «1»?

# %%
cnnlab.explain(run.path, photo, model=Lenet5(), target="1").plot_attribution()

# %% [markdown]
# Lo mismo sobre los peores errores del conjunto de test, y un mapa de cómo ordena la red las
# imágenes de test justo antes de su última capa (t-SNE de las 84 características: cada isla es una
# clase; los puntos rodeados son errores, casi siempre entre las dos clases que confunde):

# %%
interp.plot_top_losses(9, heatmap=True)

# %%
interp.plot_embedding()

# %% [markdown]
# Y en directo: `cnnlab serve runs/lenet5-own` abre una página donde dibujas un dígito y ves cambiar
# cada mapa de convolución y de *pooling* mientras dibujas; pulsa un mapa para ver su núcleo y sus
# cuentas, y marca la casilla para ver qué píxeles decidieron la predicción.

# %% [markdown]
# ### Ejercicios (predice y después ejecuta)
#
# 1. En la matriz de confusión, ¿qué cuenta la suma de la fila 3? ¿Y la de la columna 3?
# 2. Un modelo que siempre responde «1»: ¿cuál sería su *recall* para la clase 1? ¿Y su precisión?
# 3. ¿Qué pareja esperas arriba del todo en `interp.most_confused()` para una LeNet: (4, 9), (0, 1) o (2, 6)?
# 4. En la sección 5.3, ¿cuántas multiplicaciones se suman para dar el valor que muestra `plot_kernel`?
#
# <details><summary>Soluciones</summary>
#
# 1. Fila 3: las imágenes de test que *son* treses (el *support* de la clase 3). Columna 3: las
#    imágenes que el modelo *llamó* 3.
# 2. *Recall* **1,0** (encuentra todos los unos); precisión de alrededor de **0,11**: solo 1.135 de
#    las 10.000 imágenes de test son unos.
# 3. Normalmente (4, 9) o (9, 4), o parejas como (7, 2) y (3, 5): dígitos de trazos parecidos.
#    (0, 1) casi nunca ocurre.
# 4. Una por cada peso del filtro: 6 canales de entrada x 5 x 5 = **150** (`k["products"].numel()`),
#    y después se suma el sesgo.
#
# </details>

# %% [markdown]
# ## 6. Para seguir
#
# **Aumento de datos.** Pequeños giros y desplazamientos hacen el modelo más robusto a la forma de
# escribir de cada persona. cnnlab los aplica con `augment=`: `"auto"` elige el preajuste del conjunto
# de datos (pequeños giros, desplazamientos y zooms aleatorios en MNIST); `"none"` lo desactiva. La
# celda de abajo es solo una muestra de una época con pocas imágenes; para ver el efecto, compara dos
# entrenamientos completos, con y sin aumento.

# %%
augmented = cnnlab.train("lenet5", data="mnist", data_dir=DATA_DIR, run_dir=RUNS / "lenet5-augment",
                         epochs=1, subset=2000, augment="auto", overwrite=True)
augmented.test.accuracy

# %% [markdown]
# **Un modelo preentrenado.** En lugar de partir de pesos aleatorios puedes partir de los pesos de
# ImageNet de torchvision (*transfer learning*, aprendizaje por transferencia). La primera vez
# descarga los pesos, así que necesita internet:
#
# ```bash
# cnnlab train --model resnet18 --pretrained
# ```
#
# **La línea de comandos.** Todo lo de este cuaderno se puede hacer también desde un terminal:
#
# ```bash
# cnnlab train                       # la receta de la lección: LeNet-5, MNIST, 5 épocas
# cnnlab train --augment auto        # lo mismo con aumento de datos
# cnnlab analyze runs/RUN            # el análisis de la sección 5, escrito en runs/RUN/analysis/
# cnnlab analyze runs/RUN --classes 8 4 9 --per-class 10
# cnnlab predict runs/RUN mi_digito.jpg   # la preparación de la sección 2.2 y después el modelo
# cnnlab serve runs/RUN              # una página web para dibujar dígitos y ver cómo los clasifica el modelo
# ```
#
# Sustituye `runs/RUN` por la carpeta de tu entrenamiento (por ejemplo, `runs/lenet5-own`).
