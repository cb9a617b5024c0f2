"""cnnlab: train, understand and ship small convolutional image classifiers.

From a notebook::

    import cnnlab
    run = cnnlab.train(Lenet5(), data="mnist", epochs=5)   # your nn.Module, or a name: cnnlab.list_models()
    run.history; run.best_epoch; print(run.test)            # metrics per epoch; sklearn's test report
    again = cnnlab.load(run.path, model=Lenet5())           # the best weights, loaded into a fresh instance
    interp = run.interpret()                                # == cnnlab.interpret(run): test predictions, once
    interp.most_confused(5); interp.plot_misclassified(classes=[8, 4, 9])   # figures show inline
    interp.save("runs/lenet5/analysis")                     # the files `cnnlab analyze` writes
    cnnlab.summarize(Lenet5(), (1, 28, 28))                 # shapes, parameters, multiply-adds per layer

The ``cnnlab`` command line is a thin layer over the same calls. Library calls leave the process
as they found it (thread count, global random generators).
"""
from __future__ import annotations

__version__ = "0.1.0"

# Public name -> the module that defines it. Resolved on first use, so `import cnnlab` (and
# `cnnlab --help`) stays light: torch and the model code load only when something is used.
_LAZY = {
    "train": "cnnlab.apps.api",
    "load": "cnnlab.service.predictor",
    "interpret": "cnnlab.apps.api",
    "summarize": "cnnlab.apps.api",
    "list_models": "cnnlab.apps.api",
    "list_datasets": "cnnlab.apps.api",
    "TrainResult": "cnnlab.service.training",
    "Interpretation": "cnnlab.analysis.interpret",
    "Predictor": "cnnlab.service.predictor",
    "Prediction": "cnnlab.service.predictor",
    "TestReport": "cnnlab.analysis.metrics",
    "ModelSummary": "cnnlab.models.summary",
    "CnnlabError": "cnnlab.core.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
