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
# Este cuaderno recorre el capítulo paso a paso, con código que puedes ejecutar:
#
# 1. **Convolución y *pooling***: qué hace cada argumento de `nn.Conv2d` y `nn.MaxPool2d`
#    y cómo predecir el tamaño de la salida.
# 2. **torchvision**: conjuntos de datos, lectura y escritura de imágenes, transformaciones y
#    los modelos clásicos.
# 3. **LeNet-5**: la red escrita como una clase, capa a capa.
# 4. **Entrenamiento** con pytorch-ignite, con el bucle a la vista, y después lo mismo con una
#    sola llamada a `cnnlab`.
# 5. **Análisis** del mejor modelo sobre el conjunto de test: informe, matriz de confusión, errores.
# 6. **Para seguir**: aumento de datos, modelos preentrenados y la línea de comandos.
#
# El cuaderno funciona sin conexión: MNIST tiene que estar ya en el disco (`download=False`).

# %% [markdown]
# ## 0. Ajustes
#
# - `DATA_DIR` es la carpeta que *contiene* `MNIST/raw/` (los cuatro ficheros `*-ubyte`).
#   Por defecto apunta a la carpeta `shared/data` del repositorio, de forma relativa a la
#   carpeta de este cuaderno (`docs/lesson/es/`); si tu copia está en otro sitio, define la
#   variable de entorno `CNNLAB_DATA_DIR`.
# - `QUICK = True` (la variable de entorno `CNNLAB_LESSON_QUICK=1`, que pone la CI) entrena una
#   sola época con unos pocos miles de imágenes, solo para comprobar que todo se ejecuta.
#   Con `QUICK = False` sigues la lección: 50.000 imágenes de entrenamiento, 10.000 de validación
#   y 5 épocas (unos minutos en la CPU de un portátil).
# - `RUNS` es donde los entrenamientos escriben sus puntos de control (*checkpoints*).

# %%
import os
from pathlib import Path

DATA_DIR = os.environ.get("CNNLAB_DATA_DIR", "../../../../shared/data")  # la carpeta que contiene MNIST/raw/
QUICK = os.environ.get("CNNLAB_LESSON_QUICK", "0") == "1"  # la CI pone 1: una época con unos miles de imágenes
EPOCHS = 1 if QUICK else 5
SUBSET = 3000 if QUICK else None  # imágenes de entrenamiento (None: la división 50k/10k de la lección)
RUNS = Path(os.environ.get("CNNLAB_LESSON_RUNS", "runs"))

print("¿Están los ficheros de MNIST?", (Path(DATA_DIR) / "MNIST" / "raw").is_dir(), "| modo rápido:", QUICK, "| épocas:", EPOCHS)

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0);  # los mismos números aleatorios en cada ejecución

# %% [markdown]
# ## 1. Convolución y *pooling*
#
# ### 1.1 `nn.Conv2d`
#
# Una convolución 2D desliza unos filtros pequeños (*kernels*) sobre la imagen. En cada posición
# multiplica el filtro por el trozo de imagen que tiene debajo, lo suma todo (más un sesgo) y
# escribe un único número. Cada filtro produce un *canal* de salida, también llamado
# *mapa de características* (*feature map*).
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
# *todos* los canales de la entrada.

# %%
conv = nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5, stride=1, padding=2)
print("pesos:", tuple(conv.weight.shape), " sesgos:", tuple(conv.bias.shape))

x = torch.randn(1, 1, 28, 28)  # un lote con una imagen gris de 28x28: (N, C, H, W)
print("entrada:", tuple(x.shape))
print("salida: ", tuple(conv(x).shape))

# %% [markdown]
# ### 1.2 ¿De qué tamaño es la salida?
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
# ### 1.3 `nn.MaxPool2d`
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
# ### 1.4 Qué «ve» un filtro
#
# La red aprende sus filtros, pero también podemos escribir uno a mano. El kernel 3x3 de abajo
# (un filtro de Sobel) responde con fuerza donde la intensidad cambia de izquierda a derecha, es
# decir, en los **bordes verticales**; su traspuesto responde a los bordes horizontales. Lo aplicamos
# a un dígito de MNIST con `F.conv2d` (la versión funcional de `nn.Conv2d`: los pesos se le pasan
# como argumento).
#
# La línea que carga MNIST se explica en la sección 2.

# %%
from torchvision import datasets, transforms

train_set = datasets.MNIST(root=DATA_DIR, train=True, download=False, transform=transforms.ToTensor())
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
# ## 2. torchvision
#
# `torchvision` reúne lo necesario para trabajar con imágenes: conjuntos de datos (`datasets`),
# transformaciones (`transforms`), lectura y escritura de ficheros (`io`) y arquitecturas
# conocidas (`models`).
#
# ### 2.1 El conjunto MNIST
#
# `datasets.MNIST` lee los ficheros originales. Con `download=False` no intenta descargar nada
# (falla si no están). `transforms.ToTensor()` convierte cada imagen en un tensor `float32` de
# forma `(1, 28, 28)` con valores entre 0 y 1.

# %%
train_set = datasets.MNIST(root=DATA_DIR, train=True, download=False, transform=transforms.ToTensor())
test_set = datasets.MNIST(root=DATA_DIR, train=False, download=False, transform=transforms.ToTensor())
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
# ### 2.2 Leer y escribir imágenes: tu propia imagen
#
# `torchvision.io` lee y escribe ficheros PNG y JPEG como tensores `uint8` de forma `(C, H, W)`.
# Guardamos un dígito en una carpeta temporal y lo volvemos a leer.

# %%
import tempfile

from torchvision.io import ImageReadMode, read_image, write_png

tmp_dir = Path(tempfile.mkdtemp())
image, label = train_set[0]
image_u8 = (image * 255).round().to(torch.uint8)  # write_png quiere valores uint8 de 0 a 255
png_path = tmp_dir / f"digito_{label}.png"
write_png(image_u8, str(png_path))

back = read_image(str(png_path), mode=ImageReadMode.GRAY)
print(png_path.name, "->", tuple(back.shape), back.dtype, "| idéntica a la que escribimos:", torch.equal(back, image_u8))

# %% [markdown]
# Para pasarle **tu propia imagen** (un dígito dibujado en un papel, una foto...) a un modelo
# entrenado con MNIST, tiene que parecerse a MNIST: un solo canal gris, 28x28 píxeles, valores en
# [0, 1] y un **dígito claro sobre fondo oscuro**. La función de abajo prepara cualquier fichero de
# imagen; pruébala con uno tuyo.

# %%
def preparar(path):
    """Un fichero de imagen -> un tensor float (1, 28, 28) con el aspecto de MNIST."""
    img = read_image(str(path), mode=ImageReadMode.GRAY)  # (1, H, W) uint8
    img = transforms.functional.resize(img, [28, 28], antialias=True)
    x = img.float() / 255
    if x.mean() > 0.5:  # tinta oscura sobre papel blanco: la invertimos
        x = 1 - x
    return x


mi_imagen = preparar(png_path)  # cambia png_path por la ruta de tu imagen
print(tuple(mi_imagen.shape), mi_imagen.dtype)

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

raw_set = datasets.MNIST(root=DATA_DIR, train=True, download=False)  # sin transformación: imágenes PIL
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
# comparado con los ~62.000 parámetros de LeNet-5.
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
# ## 3. LeNet-5
#
# LeNet-5 (Yann LeCun, 1998) es la antecesora de las CNN modernas. Tiene dos partes:
#
# - `features`: dos etapas convolución -> ReLU -> *max-pool* que extraen patrones locales;
# - `classifier`: aplana los mapas en un vector y lo clasifica con tres capas lineales.
#
# El `padding=2` de la primera convolución conserva el tamaño 28x28 (la red original recibía
# imágenes de 32x32). Escribirla como subclase de `nn.Module` con bloques `nn.Sequential` la
# hace fácil de leer:

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
# ## 4. Entrenar LeNet-5
#
# ### 4.1 Con pytorch-ignite, con el bucle a la vista
#
# Primero dividimos las 60.000 imágenes de entrenamiento en **50.000 para entrenar** y **10.000
# para validar**. La validación sirve para elegir la mejor época; el conjunto de test (otras 10.000
# imágenes) se reserva para la evaluación final. La división usa su propio generador con semilla,
# así que siempre sale la misma.

# %%
from torch.utils.data import DataLoader, Subset, random_split

train_part, val_part = random_split(train_set, [50000, 10000], generator=torch.Generator().manual_seed(1234))
if QUICK:  # solo comprobar que funciona: unos pocos miles de imágenes
    train_part, val_part = Subset(train_part, range(3000)), Subset(val_part, range(1000))

train_loader = DataLoader(train_part, batch_size=32, shuffle=True)
# Cargadores de evaluación: lotes más grandes solo van más rápido, no cambian el resultado.
train_eval_loader = DataLoader(train_part, batch_size=256)
val_loader = DataLoader(val_part, batch_size=256)
print(len(train_part), "imágenes de entrenamiento en", len(train_loader), "lotes de 32;", len(val_part), "de validación")

# %% [markdown]
# El paso de entrenamiento es una función normal: recibe el `Engine` y un lote, y hace
# pasada hacia delante -> pérdida -> pasada hacia atrás -> paso del optimizador. ignite la llama
# para cada lote y se encarga de las épocas y de los eventos.
#
# La pérdida usa `reduction="sum"`: suma las pérdidas de las imágenes del lote en lugar de
# promediarlas. (Con Adam la escala del gradiente apenas importa.) El paso devuelve la media por
# imagen, que se lee mejor.

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
# Para evaluar, `create_supervised_evaluator` construye un `Engine` que pasa el modelo sin
# gradientes y va actualizando unas **métricas**. Ojo: la métrica `Loss` de ignite espera que la
# función de pérdida devuelva la *media* del lote (ella misma la multiplica por el tamaño del lote),
# así que aquí le damos un `nn.CrossEntropyLoss()` con la reducción por defecto, no la sumada.
#
# Tras cada época evaluamos sobre entrenamiento y validación e imprimimos ambos. El
# `ModelCheckpoint` cuelga del evaluador de validación: cada vez que este termina calcula una
# *puntuación*, la pérdida de validación cambiada de signo (más alta es mejor), y guarda en disco
# solo el mejor modelo (`n_saved=1`).

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
    global_step_transform=global_step_from_engine(trainer),  # la época, en el nombre del fichero
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
    print(f"época {engine.state.epoch}: entrenamiento pérdida {tr['loss']:.4f} exactitud {tr['accuracy']:.4f} | "
          f"validación pérdida {va['loss']:.4f} exactitud {va['accuracy']:.4f}")


trainer.run(train_loader, max_epochs=EPOCHS);

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
epochs = [h["epoch"] for h in history]
for ax, key, title in [(axes[0], "loss", "pérdida"), (axes[1], "acc", "exactitud")]:
    ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="entrenamiento")
    ax.plot(epochs, [h[f"val_{key}"] for h in history], "o-", label="validación")
    ax.set_xlabel("época")
    ax.set_title(title)
    ax.legend()
fig.tight_layout()

# %% [markdown]
# El *checkpoint* guardó la época con la menor pérdida de validación. La cargamos de nuevo en el modelo:

# %%
best_file = checkpoint.last_checkpoint
print("mejor checkpoint:", Path(best_file).name)
model.load_state_dict(torch.load(best_file, map_location="cpu"))
model.eval();

# %% [markdown]
# ¿Y la imagen de la sección 2.2? El modelo espera un lote, así que añadimos una dimensión con `unsqueeze(0)`:

# %%
with torch.no_grad():
    probs = model(mi_imagen.unsqueeze(0)).softmax(dim=1)[0]
print(f"el modelo dice {probs.argmax().item()} con probabilidad {probs.max().item():.3f}")

# %% [markdown]
# ### 4.2 Lo mismo con una sola llamada a cnnlab
#
# `cnnlab.train` sigue la misma receta (la división 50.000/10.000 con semilla 1234, lotes de 32,
# Adam con lr 1e-3, pérdida sumada, el mejor *checkpoint* según la pérdida de validación) y además
# evalúa el mejor modelo sobre el conjunto de test. Acepta tu propio `nn.Module` o el nombre de un
# modelo registrado. Todo se escribe en `run_dir`, y `overwrite=True` permite volver a ejecutar la celda.

# %%
run = cnnlab.train(Lenet5(), data="mnist", data_dir=DATA_DIR, run_dir=RUNS / "lenet5-own",
                   epochs=EPOCHS, subset=SUBSET, overwrite=True)
run

# %% [markdown]
# El historial tiene un diccionario por época, con las mismas métricas que imprimimos a mano con ignite:

# %%
run.history

# %%
print("mejor época:", run.best_epoch, "| exactitud en test:", run.test.accuracy)
print(run.test.text)

# %% [markdown]
# La LeNet-5 del registro funciona igual, por su nombre:
#
# ```python
# run = cnnlab.train("lenet5", data="mnist", data_dir=DATA_DIR, run_dir=RUNS / "lenet5", epochs=EPOCHS)
# ```
#
# Un entrenamiento se puede **volver a cargar** más adelante. Si el modelo lo define tu propia clase,
# cnnlab necesita una instancia nueva donde poner los pesos del mejor *checkpoint* (`best.pt`).
# Los dos modelos dan exactamente las mismas salidas:

# %%
again = cnnlab.load(run.path, model=Lenet5())
device = next(run.model.parameters()).device  # cnnlab entrena en la GPU si la hay
x = torch.stack([test_set[i][0] for i in range(16)]).to(device)  # 16 imágenes de test
again.model.to(device).eval()
run.model.eval()
with torch.no_grad():
    print("mismas salidas:", torch.equal(again.model(x), run.model(x)))

# %% [markdown]
# ## 5. El mejor modelo sobre el conjunto de test
#
# La exactitud sola dice poco: ¿*qué* dígitos falla el modelo y con cuáles los confunde?
#
# ### 5.1 A mano con scikit-learn (el modelo de ignite)
#
# Predecimos las 10.000 imágenes de test y las comparamos con las etiquetas verdaderas.
# `classification_report` da la precisión, la exhaustividad (*recall*) y el F1 de cada clase;
# `confusion_matrix` cuenta, para cada clase verdadera (fila), cuántas imágenes fueron a parar a
# cada clase predicha (columna).

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
# ### 5.2 Con cnnlab (el entrenamiento de la sección 4.2)
#
# `run.interpret()` (o `cnnlab.interpret(run)`) predice el conjunto de test con el mejor
# *checkpoint* una sola vez y guarda todo lo necesario para el análisis.

# %%
interp = run.interpret()
print(interp.report)

# %%
interp.confusion_matrix()

# %% [markdown]
# Las confusiones más frecuentes, como (clase verdadera, clase predicha, cuántas):

# %%
interp.most_confused(5)

# %%
interp.plot_confusion_matrix()

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
# **Calibración**: cuando el modelo dice «seguro al 90 %», ¿acierta el 90 % de las veces? En el
# diagrama de fiabilidad, un modelo perfectamente calibrado sigue la diagonal.

# %%
interp.plot_calibration()

# %% [markdown]
# Y las curvas de entrenamiento, época a época:

# %%
interp.plot_curves()

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
# cnnlab serve runs/RUN              # una página web para dibujar dígitos y ver cómo los clasifica el modelo
# ```
#
# Sustituye `runs/RUN` por la carpeta de tu entrenamiento (por ejemplo, `runs/lenet5-own`).
