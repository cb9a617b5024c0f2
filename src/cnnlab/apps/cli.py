"""The ``cnnlab`` command line: declarations only; every command calls the library.

Each command's docstring is its ``--help``. User mistakes (a missing file, a
bad value) end with one clear line on stderr and a non-zero exit, never a
traceback.
"""
from __future__ import annotations

import functools
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import click

from cnnlab import __version__
from cnnlab.accel.malloc import tune_malloc, tune_malloc_for_serving
from cnnlab.core.config import EVAL_BATCH_SIZE
from cnnlab.core.errors import CnnlabError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that both unwind (temp files removed) and exit 143."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into ``error: ...`` and the error's exit code; Ctrl-C/SIGTERM into 130/143."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CnnlabError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:  # outside training's own handler (start-up, scoring, other commands)
            name, code = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("SIGINT", 130)
            click.echo(f"error: {name}: interrupted; files already written are complete (every write is atomic); "
                       "run the same command again to finish", err=True)
            sys.exit(code)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cnnlab")
def cli() -> None:
    """Train, understand and ship small convolutional image classifiers.

    Start with `cnnlab train` (the lesson's LeNet-5 recipe on MNIST), then
    `cnnlab evaluate RUN_DIR`.
    """
    # Process-wide, so the command line applies it and library calls do not (benchmarks/README.md,
    # "Memory allocator"): batch buffers are reused instead of re-faulted. Not for serve: a server
    # must hand a large upload's memory back once answered (issue 16, benchmarks/serve_memory.py).
    if click.get_current_context().invoked_subcommand == "serve":
        tune_malloc_for_serving()
    else:
        tune_malloc()


# --- train ---------------------------------------------------------------------------------


@cli.command()
@click.option("--dataset", default=None, help="Dataset name.  [default: mnist]")
@click.option("--model", "model_name", default=None, help="Model name (see `cnnlab models`).  [default: lenet5]")
@click.option("--epochs", type=int, default=None, help="Training epochs.  [default: 5]")
@click.option("--batch-size", type=int, default=None, help="Training batch size.  [default: 32]")
@click.option("--eval-batch-size", type=int, default=None, help=f"Evaluation batch size (speed only).  [default: {EVAL_BATCH_SIZE}]")
@click.option("--lr", type=float, default=None, help="Learning rate.  [default: 0.001]")
@click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd"]), default=None, help="Optimizer.  [default: adam]")
@click.option("--weight-decay", type=float, default=None, help="Weight decay.  [default: 0]")
@click.option("--seed", type=int, default=None, help="Seed for model init and shuffling.  [default: 0]")
@click.option("--split-seed", type=int, default=None, help="Seed of the train/validation split.  [default: 1234]")
@click.option("--val-size", type=int, default=None, help="Validation images held out of the training set.  [default: 10000]")
@click.option("--subset", type=int, default=None, help="Train on only the first N training images (quick tries).")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.  [default: auto]")
@click.option("--threads", type=int, default=None, help="CPU threads.  [default: 1 on machines with <= 2 cores, else all cores up to 8]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Dataset folder.  [default: $CNNLAB_DATA_DIR, else ~/.cache/cnnlab/data]")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Where the run is written.  [default: runs/MODEL-DATASET-TIME]")
@click.option("--no-download", is_flag=True, help="Never download; fail if the files are missing.")
@click.option("--no-train-eval", is_flag=True, help="Skip the per-epoch evaluation on the training set.")
@click.option("--no-channels-last", is_flag=True, help="Keep NCHW activations (slower on CPU; bit-level differences only).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--tensorboard", is_flag=True,
              help='Write TensorBoard events to RUN/tensorboard/ (needs: pip install "cnnlab[tensorboard]").')
@click.option("--deterministic", is_flag=True, help="Deterministic kernels everywhere (needed for bit-exact CUDA resume).")
@click.option("--amp", type=click.Choice(["off", "bf16"]), default=None,
              help="bf16: forward passes under bfloat16 autocast (GPU speed; changes numerics).  [default: off]")
@click.option("--compile", "compile_mode", type=click.Choice(["off", "default", "reduce-overhead", "max-autotune"]),
              default=None, help="torch.compile the model (reduce-overhead: CUDA graphs; changes numerics "
                                 "slightly, first epoch pays the compile time).  [default: off]")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="Continue the run in this directory from its last.pt (only --epochs, --device, "
                   "--threads, --data-dir, --no-progress may change).")
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Train data-parallel in N local processes (DistributedDataParallel; gloo on CPU, nccl on GPU). "
                   "--batch-size is per process. Under torchrun leave this out.")
@click.option("--recipe", default=None,
              help="Start from a named recipe (tutorial, mnist-smallcnn, cifar10-resnet18) or a TOML file; "
                   "other flags override it.  [default: tutorial, the lesson's]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="A TOML config file (same as --recipe FILE).")
@click.option("--image-size", type=int, default=None, help="Resize images to this side once, at load time.")
@click.option("--pretrained", is_flag=True, default=None,
              help="Start from torchvision's ImageNet weights (alexnet, vgg11, googlenet, resnet18).")
@click.option("--momentum", type=float, default=None, help="SGD momentum.  [default: 0.9]")
@click.option("--nesterov", is_flag=True, default=None, help="SGD with Nesterov momentum.")
@click.option("--schedule", type=click.Choice(["constant", "onecycle", "cosine", "step"]), default=None,
              help="Learning-rate schedule.  [default: constant]")
@click.option("--step-epochs", type=int, default=None, help="step schedule: epochs between lr drops.  [default: 10]")
@click.option("--step-gamma", type=float, default=None, help="step schedule: lr factor at each drop.  [default: 0.1]")
@click.option("--label-smoothing", type=float, default=None, help="Label smoothing of the training loss.  [default: 0]")
@click.option("--loss-reduction", type=click.Choice(["sum", "mean"]), default=None,
              help="Training loss per batch: summed (the lesson's) or mean.  [default: sum]")
@click.option("--augment", default=None,
              help="Batched augmentation: none, auto (the dataset's preset), shift, affine, crop, crop-flip, "
                   "with overrides as NAME:key=value,...  [default: none]")
@click.option("--patience", type=int, default=None, help="Early stopping: epochs without a better validation loss.")
@friendly_errors
def train(**opts: Any) -> None:
    """Train a model; by default the lesson's recipe (LeNet-5, MNIST, Adam 1e-3, batch 32, 5 epochs).

    After every epoch it prints train and validation loss/accuracy, keeps the
    best checkpoint by validation loss and a full-state last.pt; at the end the
    best model is scored on the test set and the classification report is
    printed. Running the same command again on the same --run-dir resumes an
    interrupted run (Ctrl-C saves and exits with 130).

    Several processes: `cnnlab train --nproc 2 ...` on one machine, or
    `torchrun --nproc_per_node=4 -m cnnlab train ...` (also across machines);
    see the README section "Scale out with torchrun".
    """
    from cnnlab.core.runs import default_run_dir
    from cnnlab.engine.distributed import launch
    from cnnlab.engine.tracking import require_tensorboard
    from cnnlab.engine.train import RESUMABLE_CHANGES, resume_config

    if opts.get("tensorboard"):
        require_tensorboard()  # before any data is read or a run folder is made

    run_dir = opts["run_dir"]
    if opts["resume_dir"]:
        if run_dir and Path(run_dir) != Path(opts["resume_dir"]):
            raise click.UsageError("--resume RUN_DIR and --run-dir name different folders; give only --resume")
        run_dir = opts["resume_dir"]
        changes = {"train.epochs": opts["epochs"], "train.device": opts["device"], "train.threads": opts["threads"],
                   "data.data_dir": opts["data_dir"], "train.progress": False if opts["no_progress"] else None,
                   "train.tensorboard": True if opts.get("tensorboard") else None}
        cfg = resume_config(run_dir, **changes)
        # An option repeated with the run's own value (`--deterministic` on a deterministic run) is the
        # same command again, which resumes; only options that would change the run are refused.
        fixed = [k for k, v in opts.items() if v not in (None, False) and k not in
                 ("epochs", "device", "threads", "data_dir", "no_progress", "resume_dir", "run_dir", "nproc",
                  "tensorboard")]
        sources = [k for k in fixed if k in ("recipe", "config_file")]
        if sources:
            names = ", ".join("--" + k.replace("_", "-") for k in sources)
            raise click.UsageError(f"--resume continues a run as it was configured; {names} cannot be given")
        changed = cfg.differences(config_from_options(cfg, opts), ignore=RESUMABLE_CHANGES) if fixed else []
        if changed:
            raise click.UsageError(f"--resume continues a run as it was configured; {', '.join(changed)} "
                                   "cannot be changed")
    else:
        cfg = config_from_options(base_config(opts), opts)
    run_dir = run_dir or default_run_dir(cfg)  # named once, so spawned workers agree on it
    code = launch(train_and_report, cfg, run_dir, nproc=opts["nproc"])
    if code:
        sys.exit(code)


def train_and_report(cfg: Any, run_dir: Any) -> None:
    """One training process (of one, or of several): train, then rank 0 prints the test report."""
    from cnnlab.apps.api import train_config
    from cnnlab.engine.distributed import is_main

    result = train_config(cfg, run_dir, log=click.echo)
    if is_main():
        click.echo(f"\nbest epoch {result.best_epoch} (val loss {result.best_val_loss:.4f}); test set:")
        click.echo(result.test.text)
        click.echo(f"test accuracy {result.test.accuracy:.2%}   run: {result.run.path}   ({result.seconds:.1f}s)")


def base_config(opts: dict[str, Any]) -> Any:
    """The recipe (--recipe / --config) that command-line flags then override; the lesson's by default."""
    from cnnlab.core.config import Config, load_recipe

    if opts.get("recipe") and opts.get("config_file"):
        raise click.UsageError("give either --recipe or --config, not both")
    source = opts.get("recipe") or opts.get("config_file")
    return load_recipe(source) if source else Config()


def config_from_options(cfg: Any, opts: dict[str, Any]) -> Any:
    cfg = cfg.override("data", image_size=opts.get("image_size"))
    cfg = cfg.override("model", pretrained=opts.get("pretrained"))
    cfg = cfg.override("optim", momentum=opts.get("momentum"), nesterov=opts.get("nesterov"),
                       schedule=opts.get("schedule"), step_epochs=opts.get("step_epochs"),
                       step_gamma=opts.get("step_gamma"))
    cfg = cfg.override("train", label_smoothing=opts.get("label_smoothing"), augment=opts.get("augment"),
                       patience=opts.get("patience"), loss_reduction=opts.get("loss_reduction"))
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
        deterministic=True if opts.get("deterministic") else None,
        tensorboard=True if opts.get("tensorboard") else None,
        amp=opts.get("amp"), compile=opts.get("compile_mode"),
    )


# --- evaluate ------------------------------------------------------------------------------


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Dataset folder (default: the run's).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=EVAL_BATCH_SIZE, show_default=True, help="Evaluation batch size (speed only).")
@friendly_errors
def evaluate(run_dir: str, data_dir: str | None, device: str, batch_size: int) -> None:
    """Re-score a run's best checkpoint on the test set and rewrite its report files."""
    from cnnlab.analysis.report import evaluate_run

    report = evaluate_run(run_dir, data_dir=data_dir, device=device, batch_size=batch_size)
    click.echo(report.text)
    click.echo(f"test accuracy {report.accuracy:.2%}  loss {report.loss:.4f}  ({report.num_images} images)")


# --- predict / export ----------------------------------------------------------------------


@cli.command()
@click.argument("model", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="Classes reported per image.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write the predictions to this CSV or JSON file (by suffix; see --format).")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default=None,
              help="Output file format.  [default: from the --output suffix, else csv]")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output file / --save-preprocessed files.")
@click.option("--save-preprocessed", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write each network input (what the model actually saw) as a PNG into DIR.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Images per forward pass.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Decoding threads.  [default: cores, at most 4]")
@click.option("--device", default="cpu", show_default=True, help="cpu, auto, cuda or cuda:N.")
@click.option("--quiet", "-q", is_flag=True, help="No table on screen (errors and the summary are still printed).")
@friendly_errors
def predict(model: str, inputs: tuple[str, ...], top_k: int, output: str | None, fmt: str | None, overwrite: bool,
            save_preprocessed: str | None, batch_size: int, workers: int | None, device: str, quiet: bool) -> None:
    """Predict the class of your own images with a trained model.

    MODEL is a run directory (its best.pt) or a checkpoint file. INPUTS are image
    files and folders (searched recursively); PNG, JPEG, BMP, GIF, TIFF and WebP
    are recognised by content, in any mode (grayscale, RGB, RGBA, palette, 16-bit).
    Each image is prepared the way the model's training data was (for MNIST:
    inverted if dark-on-light, cropped to the ink, fitted to 20x20, centred by
    mass in 28x28). A file that cannot be used gets one error line and the others
    are still predicted; the exit code is 1 when any file failed.

    \b
    Example:
      cnnlab predict runs/lenet5 my_digit.png scans/ --top-k 3 -o preds.csv
    """
    from cnnlab.apps.predict import (
        check_folder_free,
        check_output_free,
        format_table,
        load,
        write_results,
    )

    check_output_free(output, overwrite)
    check_folder_free(save_preprocessed, overwrite)
    predictor = load(model, device=device, batch_size=batch_size)

    def report_error(result: Any) -> None:
        if result.error:
            click.echo(f"error: {result.path}: {result.error}", err=True)

    results = predictor.predict_files(inputs, top_k, save_preprocessed=save_preprocessed, workers=workers,
                                      on_result=report_error)
    if not quiet and (table := format_table(results, top_k)):
        click.echo(table)
    if output:
        write_results(results, output, predictor, top_k, fmt)
    failed = len(results.failed)
    summary = f"{len(results) - failed} predicted, {failed} failed"
    if results.skipped:
        summary += f", {len(results.skipped)} non-image file(s) in folders skipped"
    if output:
        summary += f"; wrote {output}"
    if save_preprocessed:
        summary += f"; network inputs in {save_preprocessed}/"
    click.echo(summary, err=True)
    if not len(results):
        click.echo(f"error: no image files found in {', '.join(inputs)}", err=True)
    if failed or not len(results):
        sys.exit(1)


@cli.command()
@click.argument("model", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), default="onnx", show_default=True,
              help="Export format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="File to write.  [default: model.onnx / model.torchscript.pt next to the checkpoint]")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--opset", type=click.IntRange(min=7), default=None, help="ONNX opset.  [default: 17]")
@click.option("--verify-images", multiple=True, type=click.Path(), metavar="PATH",
              help="Image or folder to compare the export on (repeatable).  [default: the dataset's test images]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Dataset folder (default: the run's).")
@click.option("--verify-count", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Test images used for the comparison.")
@friendly_errors
def export(model: str, fmt: str, output: str | None, overwrite: bool, opset: int | None,
           verify_images: tuple[str, ...], data_dir: str | None, verify_count: int) -> None:
    """Export a trained model to ONNX or TorchScript, checked against PyTorch.

    MODEL is a run directory (its best.pt) or a checkpoint file. The exported
    model takes a float32 batch (N, C, H, W) of any size N, already preprocessed,
    and returns logits; it carries the class names and the preprocessing recipe as
    metadata. After exporting, the file is loaded back (ONNX with onnxruntime when
    installed, else onnx's reference evaluator) and its outputs are compared with
    PyTorch's on real inputs; the largest difference is reported and the file is
    written only if they agree.
    """
    from cnnlab.apps.export import export_model

    result = export_model(model, fmt, output, overwrite=overwrite, opset=opset, verify_images=list(verify_images),
                          data_dir=data_dir, verify_count=verify_count)
    click.echo(result.summary())


# --- serve ---------------------------------------------------------------------------------


@cli.command()
@click.argument("run_dir", type=click.Path(exists=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The default serves this machine only; 0.0.0.0 opens it to your network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free port).")
@click.option("--max-upload-mb", type=click.FloatRange(min=0.001), default=5.0, show_default=True,
              help="Largest request body accepted, in MiB; bigger uploads get HTTP 413.")
@friendly_errors
def serve(run_dir: str, host: str, port: int, max_upload_mb: float) -> None:
    """Serve a page where you draw a digit and watch the model classify it live.

    RUN_DIR is a run directory (or a checkpoint file). The page has a drawing
    canvas (mouse and touch), an upload button, live top-k probabilities and
    the 28x28 image the model saw; the JSON API is POST /api/predict and
    GET /api/model, documented at /docs. Needs the serve extra:
    pip install 'cnnlab[serve]'.
    """
    from cnnlab.apps.serve import serve as run_server

    run_server(run_dir, host=host, port=port, max_bytes=int(max_upload_mb * 1024 * 1024), log=click.echo)


# --- analyze / show-data / compare ---------------------------------------------------------


@cli.command(context_settings={"allow_extra_args": True})
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--classes", default=None, metavar="CLASS...",
              help="Rows of the misclassified gallery: class names or indices (`--classes 8 4 9` or `8,4,9`).  "
                   "[default: the 3 classes with the most errors]")
@click.option("--per-class", type=click.IntRange(min=1), default=10, show_default=True,
              help="Wrong images shown per gallery row.")
@click.option("--top-k", type=click.IntRange(min=1), default=24, show_default=True, help="Images in the top-losses gallery.")
@click.option("--bins", type=click.IntRange(min=1), default=15, show_default=True, help="Calibration (ECE) bins.")
@click.option("--no-html", is_flag=True, help="Skip analysis/index.html.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Dataset folder (default: the run's).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=EVAL_BATCH_SIZE, show_default=True, help="Evaluation batch size (speed only).")
@click.pass_context
@friendly_errors
def analyze(ctx: click.Context, run_dir: str, classes: str | None, per_class: int, top_k: int, bins: int,
            no_html: bool, data_dir: str | None, device: str, batch_size: int) -> None:
    """Study a run's mistakes on the test set; everything is written to RUN_DIR/analysis/.

    Confusion matrix (counts and row-normalised), a gallery of misclassified
    images per class titled "pred (prob)", the top-losses gallery (likely
    mislabelled images), the most-confused pairs (printed, and as CSV),
    per-class accuracy, calibration (ECE, reliability diagram, confidence
    histograms), training curves, and one self-contained index.html. The
    lesson's figure: cnnlab analyze RUN_DIR --classes 8 4 9 --per-class 10
    """
    from cnnlab.analysis.report import analyze_run

    dirs = [a for a in ctx.args if Path(a).is_dir()]
    if classes is not None and not Path(run_dir).is_dir() and len(dirs) == 1:
        # `--classes 8 4 9 RUN_DIR`: click took the second class for RUN_DIR; put them back in place.
        ctx.args.remove(dirs[0])
        ctx.args.insert(0, run_dir)
        run_dir = dirs[0]
    if ctx.args and classes is None:
        raise click.UsageError(f"unexpected arguments: {' '.join(ctx.args)}")
    wanted = [c for part in [classes or "", *ctx.args] for c in part.split(",") if c.strip()] or None
    result = analyze_run(run_dir, classes=wanted, per_class=per_class, top_k=top_k, n_bins=bins, html=not no_html,
                         data_dir=data_dir, device=device, batch_size=batch_size)
    click.echo(result.text())


@cli.command("show-data")
@click.option("--dataset", default="mnist", show_default=True, help="Dataset name.")
@click.option("--n", "n", type=click.IntRange(min=1), default=10, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which random images (same seed, same images).")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True, help="Dataset split.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="PNG to write.  [default: DATASET_samples.png]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Dataset folder.  [default: $CNNLAB_DATA_DIR, else ~/.cache/cnnlab/data]")
@click.option("--no-download", is_flag=True, help="Never download; fail if the files are missing.")
@friendly_errors
def show_data(dataset: str, n: int, seed: int, split: str, out: str | None, data_dir: str | None, no_download: bool) -> None:
    """Save a grid of random labelled images from a dataset (the lesson's first figure)."""
    from cnnlab.analysis.report import show_data as save_samples

    path = save_samples(dataset, out=out or f"{dataset}_samples.png", data_dir=data_dir, n=n, seed=seed, split=split,
                        download=not no_download)
    click.echo(f"wrote {path}")


@cli.command()
@click.argument("run_a", type=click.Path(file_okay=False))
@click.argument("run_b", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for compare.json and disagreements.png.  [default: RUN_A/analysis/compare-<RUN_B name>]")
@click.option("--max-images", type=click.IntRange(min=0), default=40, show_default=True,
              help="Disagreement images drawn.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Dataset folder (default: each run's).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=EVAL_BATCH_SIZE, show_default=True, help="Evaluation batch size (speed only).")
@friendly_errors
def compare(run_a: str, run_b: str, out: str | None, max_images: int, data_dir: str | None, device: str,
            batch_size: int) -> None:
    """Which of two runs is better on the test set, and is the difference significant?

    Prints both test accuracies and their difference, runs McNemar's exact test
    on the paired predictions, and draws the images where the runs disagree.
    Runs scored on different test sets are refused.
    """
    from cnnlab.analysis.report import compare_runs

    result = compare_runs(run_a, run_b, out=out, max_images=max_images, data_dir=data_dir, device=device,
                          batch_size=batch_size)
    click.echo(result.text())


# --- models, layers, visualize ---------------------------------------------------------------


def _input_shape(input_text: str | None, dataset: str | None) -> tuple[tuple[int, int, int], int]:
    from cnnlab.data.sets import input_shape
    from cnnlab.models.summary import parse_shape

    if input_text and dataset:
        raise click.UsageError("give either --input or --dataset, not both")
    if dataset:
        return input_shape(dataset)
    return (parse_shape(input_text) if input_text else (1, 28, 28)), 10


@cli.command()
@click.option("--input", "input_text", default=None, help="Input shape CxHxW.  [default: 1x28x28]")
@click.option("--dataset", default=None, help="Use this dataset's input shape and class count instead.")
@friendly_errors
def models(input_text: str | None, dataset: str | None) -> None:
    """List the models with their parameters and multiply-adds (MACs) for one input image."""
    from cnnlab.models.summary import models_table

    shape, classes = _input_shape(input_text, dataset)
    click.echo(models_table(shape, classes))


@cli.command()
@click.argument("model", required=False)
@click.option("--input", "input_text", default=None, help="Input shape CxHxW for MODEL.  [default: 1x28x28]")
@click.option("--dataset", default=None, help="Use this dataset's input shape and class count for MODEL.")
@click.option("--conv", "conv_kernel", type=int, default=None, help="Output size of a Conv2d with this kernel size.")
@click.option("--pool", "pool_kernel", type=int, default=None, help="Output size of a pooling layer with this kernel size.")
@click.option("--size", type=int, default=28, show_default=True, help="Input side for --conv/--pool.")
@click.option("--stride", type=int, default=None, help="Stride for --conv/--pool.  [default: 1 / the kernel size]")
@click.option("--padding", type=int, default=0, show_default=True, help="Padding for --conv/--pool.")
@click.option("--dilation", type=int, default=1, show_default=True, help="Dilation for --conv/--pool.")
@click.option("--ceil-mode", is_flag=True, help="--pool: round the output size up, as ceil_mode=True does.")
@click.option("--pool-example", is_flag=True, help="Show a worked 4x4 example of max and average pooling.")
@friendly_errors
def layers(model: str | None, input_text: str | None, dataset: str | None, conv_kernel: int | None,
           pool_kernel: int | None, size: int, stride: int | None, padding: int, dilation: int, ceil_mode: bool,
           pool_example: bool) -> None:
    """Explore layers: each layer of MODEL with output shape, parameters and MACs, or conv/pool arithmetic.

    `cnnlab layers lenet5` lists LeNet-5 layer by layer (416,520 MACs for one 28x28 image).
    `cnnlab layers --conv 5 --padding 2 --size 28` and `cnnlab layers --pool 2 --size 28` work out
    output sizes with PyTorch's formulas; --pool also shows a worked example of max and average pooling.
    """
    from cnnlab.models import shapes
    from cnnlab.models.summary import summarize_model

    if not (model or conv_kernel or pool_kernel or pool_example):
        raise click.UsageError("name a MODEL, or give --conv K, --pool K or --pool-example")
    if model:
        shape, classes = _input_shape(input_text, dataset)
        click.echo(summarize_model(model, shape, classes).to_text())
    if conv_kernel is not None:
        click.echo(shapes.explain_conv(size, conv_kernel, 1 if stride is None else stride, padding, dilation))
    if pool_kernel is not None:
        click.echo(shapes.explain_pool(size, pool_kernel, stride, padding, dilation, ceil_mode))
    if pool_kernel is not None or pool_example:
        click.echo("")
        click.echo(shapes.pooling_example())


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where the PNGs go.  [default: RUN_DIR/visualize]")
@click.option("--index", type=int, default=0, show_default=True, help="Which test image to follow through the network.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Dataset folder (default: the run's).")
@click.option("--max-maps", type=int, default=32, show_default=True, help="At most this many feature maps per layer.")
@friendly_errors
def visualize(run_dir: str, out_dir: str | None, index: int, data_dir: str | None, max_maps: int) -> None:
    """Write PNGs of the first conv layer's filters and of every conv layer's feature maps for one test image."""
    from cnnlab.analysis.explain import visualize_run

    for path in visualize_run(run_dir, out_dir, index=index, data_dir=data_dir, max_maps=max_maps):
        click.echo(str(path))


def main() -> None:
    signal.signal(signal.SIGTERM, _raise_terminated)
    cli(prog_name="cnnlab")


if __name__ == "__main__":
    main()
