"""The ``cnnlab`` command line: declarations only; every command calls the library.

Each command's docstring is its ``--help``. User mistakes (a missing file, a
bad value) end with one clear line on stderr and a non-zero exit, never a
traceback.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable

import click

from cnnlab import __version__
from cnnlab.errors import CnnlabError


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into ``error: ...`` and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CnnlabError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cnnlab")
def cli() -> None:
    """Train, understand and ship small convolutional image classifiers.

    Start with `cnnlab train` (the lesson's LeNet-5 recipe on MNIST), then
    `cnnlab evaluate RUN_DIR`.
    """


# --- train ---------------------------------------------------------------------------------


@cli.command()
@click.option("--dataset", default=None, help="Dataset name.  [default: mnist]")
@click.option("--model", "model_name", default=None, help="Model name (see `cnnlab models`).  [default: lenet5]")
@click.option("--epochs", type=int, default=None, help="Training epochs.  [default: 5]")
@click.option("--batch-size", type=int, default=None, help="Training batch size.  [default: 32]")
@click.option("--eval-batch-size", type=int, default=None, help="Evaluation batch size (speed only).  [default: 1000]")
@click.option("--lr", type=float, default=None, help="Learning rate.  [default: 0.001]")
@click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd"]), default=None, help="Optimizer.  [default: adam]")
@click.option("--weight-decay", type=float, default=None, help="Weight decay.  [default: 0]")
@click.option("--seed", type=int, default=None, help="Seed for model init and shuffling.  [default: 0]")
@click.option("--split-seed", type=int, default=None, help="Seed of the train/validation split.  [default: 1234]")
@click.option("--val-size", type=int, default=None, help="Validation images held out of the training set.  [default: 10000]")
@click.option("--subset", type=int, default=None, help="Train on only the first N training images (quick tries).")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.  [default: auto]")
@click.option("--threads", type=int, default=None, help="CPU threads.  [default: all cores, at most 8]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Dataset folder.  [default: $CNNLAB_DATA_DIR, else ~/.cache/cnnlab/data]")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Where the run is written.  [default: runs/MODEL-DATASET-TIME]")
@click.option("--no-download", is_flag=True, help="Never download; fail if the files are missing.")
@click.option("--no-train-eval", is_flag=True, help="Skip the per-epoch evaluation on the training set.")
@click.option("--no-channels-last", is_flag=True, help="Keep NCHW activations (slower on CPU; bit-level differences only).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@friendly_errors
def train(**opts: Any) -> None:
    """Train a model; by default the lesson's recipe (LeNet-5, MNIST, Adam 1e-3, batch 32, 5 epochs).

    After every epoch it prints train and validation loss/accuracy and keeps the
    best checkpoint by validation loss; at the end the best model is scored on
    the test set and the classification report is printed.
    """
    from cnnlab.config import Config
    from cnnlab.train import train as run_training

    cfg = config_from_options(Config(), opts)
    result = run_training(cfg, opts["run_dir"], log=click.echo)
    click.echo(f"\nbest epoch {result.best_epoch} (val loss {result.best_val_loss:.4f}); test set:")
    click.echo(result.test.text)
    click.echo(f"test accuracy {result.test.accuracy:.2%}   run: {result.run.path}   ({result.seconds:.1f}s)")


def config_from_options(cfg: Any, opts: dict[str, Any]) -> Any:
    cfg = cfg.override("data", dataset=opts.get("dataset"), data_dir=opts.get("data_dir"),
                       val_size=opts.get("val_size"), split_seed=opts.get("split_seed"), subset=opts.get("subset"),
                       download=False if opts.get("no_download") else None)
    cfg = cfg.override("model", name=opts.get("model_name"))
    cfg = cfg.override("optim", name=opts.get("optimizer"), lr=opts.get("lr"), weight_decay=opts.get("weight_decay"))
    return cfg.override(
        "train", epochs=opts.get("epochs"), batch_size=opts.get("batch_size"),
        eval_batch_size=opts.get("eval_batch_size"), seed=opts.get("seed"), device=opts.get("device"),
        threads=opts.get("threads"),
        train_eval=False if opts.get("no_train_eval") else None,
        channels_last=False if opts.get("no_channels_last") else None,
        progress=False if opts.get("no_progress") else None,
    )


# --- evaluate ------------------------------------------------------------------------------


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Dataset folder (default: the run's).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=1000, show_default=True, help="Evaluation batch size.")
@friendly_errors
def evaluate(run_dir: str, data_dir: str | None, device: str, batch_size: int) -> None:
    """Re-score a run's best checkpoint on the test set and rewrite its report files."""
    from cnnlab.evaluate import evaluate_run

    report = evaluate_run(run_dir, data_dir=data_dir, device=device, batch_size=batch_size)
    click.echo(report.text)
    click.echo(f"test accuracy {report.accuracy:.2%}  loss {report.loss:.4f}  ({report.num_images} images)")


def main() -> None:
    cli(prog_name="cnnlab")


if __name__ == "__main__":
    main()
