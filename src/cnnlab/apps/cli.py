"""The ``cnnlab`` command line: declarations only; every command calls the library.

Each command's docstring is its ``--help``. User mistakes (a missing file, a
bad value) end with one clear line on stderr and a non-zero exit, never a
traceback.
"""
from __future__ import annotations

import functools
import json
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import click
from click.shell_completion import CompletionItem

from cnnlab import __version__
from cnnlab.accel.malloc import tune_malloc, tune_malloc_for_serving
from cnnlab.core.config import (
    DEVICE_HELP,
    DEVICES,
    EVAL_BATCH_SIZE,
    EXPORT_FORMATS,
    Config,
    TrainConfig,
    config_fields,
    field_kinds,
    list_recipes,
)
from cnnlab.core.errors import CnnlabError, OutputExistsError, ResumeChangeError, RunConfigMismatch, SaveError
from cnnlab.core.files import STDOUT, FolderNotFree, figure_format  # STDOUT: `-o -` writes to standard output
from cnnlab.core.i18n import LANGUAGES, _, format_float, format_percent, language, normalize, use_language
from cnnlab.core.process import exit_now


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
            exc.hint = exc.hint or cli_hint(exc)
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:  # outside training's own handler (start-up, scoring, other commands)
            name, code = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("SIGINT", 130)
            click.echo(_("error: {signal}: interrupted; files already written are complete (every write is atomic); "
                         "run the same command again to finish").format(signal=name), err=True)
            sys.exit(code)

    return wrapper


def cli_hint(exc: CnnlabError) -> str | None:
    """The command line's way out of a library error, written from the data the error carries."""
    if isinstance(exc, RunConfigMismatch):
        return _("use another --run-dir, or `cnnlab train --resume` to continue it as configured")
    if isinstance(exc, ResumeChangeError):
        return _("--resume continues a run as it was configured: drop those options, or train into a new --run-dir")
    if isinstance(exc, FolderNotFree):
        return _("choose an empty folder") if exc.foreign else _("pass --overwrite to replace what cnnlab wrote there")
    if isinstance(exc, OutputExistsError):
        return _("pass --overwrite to write into it anyway") if exc.folder else _("pass --overwrite to replace it")
    if exc.option == "resume" and getattr(exc, "path", None) is not None:
        return _("resume with: cnnlab train --resume {path}").format(path=exc.path)
    if exc.option == "run_dir":
        return _("choose another --run-dir")
    if exc.option in ("data.data_dir", "data_dir"):
        return _("give the folder with --data-dir (or set $CNNLAB_DATA_DIR)")
    if exc.option == "nproc":
        return _("leave out --nproc under torchrun (its --nproc_per_node starts the workers)")
    flag = config_flags().get(exc.option or "") or _KEYWORD_FLAGS.get(exc.option or "")
    return _("see {flag}").format(flag=flag) if flag else None


# Library keywords that errors name, and the option each command spells them with.
_KEYWORD_FLAGS = {"device": "--device", "index": "--index", "input": "--input CxHxW", "n": "--n"}


def config_flags() -> dict[str, str]:
    """``{"data.data_dir": "--data-dir", ...}``: the option of every config field."""
    return {f"{section}.{f.name}": f.metadata["cli"]["flag"] or "--" + f.name.replace("_", "-")
            for section, f in config_fields() if "cli" in f.metadata}


# --- shared declarations ---------------------------------------------------------------------
# One declaration per option that several commands take, so its name, default and help agree.

class LazyHelpOption(click.Option):
    """An option whose help ends with a list from a registry, built only when help is shown:
    the registries import torch, and `cnnlab --help` and shell completion must stay fast."""

    def __init__(self, *args: Any, help_suffix: Callable[[], str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help_suffix = help_suffix

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        if self.help_suffix is not None:
            text, _sep, default = (self.help or "").partition("  [default:")
            self.help = f"{text} {self.help_suffix()}" + (f"  [default:{default}" if default else "")
            self.help_suffix = None
        return super().get_help_record(ctx)


def model_names() -> list[str]:
    from cnnlab.core.catalog import model_names as declared  # no torch: help and completion stay instant

    return declared()


def dataset_names() -> list[str]:
    from cnnlab.core.catalog import DATASETS

    return [name.replace("PATH", "") for name, _text in DATASETS]


def _completer(names: Callable[[], list[str]]) -> Callable[..., list[CompletionItem]]:
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        return [CompletionItem(n) for n in names() if n.startswith(incomplete)]

    return complete


complete_models = _completer(model_names)
complete_datasets = _completer(dataset_names)
complete_recipes = _completer(list_recipes)
complete_devices = _completer(lambda: [d for d in DEVICES if d != "cuda:N"])


def models_help() -> str:
    return f"One of: {', '.join(model_names())}."


def datasets_help() -> str:
    return f"One of: {', '.join(dataset_names())}PATH."


def data_dir_option(default: str = "the run's") -> Callable[[Any], Any]:
    return click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                        help=f"Dataset folder.  [default: {default}]")


def dataset_option(default: str | None, help: str) -> Callable[[Any], Any]:
    return click.option("--dataset", default=default, show_default=default is not None, help=help,
                        cls=LazyHelpOption, help_suffix=datasets_help, shell_complete=complete_datasets)


def device_option(fn: Any) -> Any:
    return click.option("--device", default=TrainConfig.device, show_default=True, help=DEVICE_HELP, metavar="DEVICE",
                        shell_complete=complete_devices)(fn)


def eval_batch_size_option(fn: Any) -> Any:
    return click.option("--eval-batch-size", type=click.IntRange(min=1), default=EVAL_BATCH_SIZE, show_default=True,
                        help="Images per forward pass (speed only, never the results).")(fn)


def output_option(help: str, *, folder: bool = False) -> Callable[[Any], Any]:
    """``-o/--output``; for a file, ``-`` is standard output."""

    def decorate(fn: Any) -> Any:
        path = click.Path(file_okay=False) if folder else click.Path(dir_okay=False, allow_dash=True)
        return click.option("--output", "-o", type=path, default=None, help=help)(fn)

    return decorate


def json_option(fn: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON document on stdout (messages go to stderr).")(fn)


def echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


def echo_result(result: Any) -> None:
    """A result's text on stdout and the files it wrote ("wrote ...") on stderr: the streams habit."""
    click.echo(result.text(files=False))
    if result.files:
        click.echo(result.wrote(), err=True)


def folder_output(output: str | None, what: str) -> None:
    if output == STDOUT:
        raise click.UsageError(f"-o - (standard output) takes a file, but {what} writes a folder; name a folder")


def overwrite_option(help: str = "Replace an existing -o/--output file.") -> Callable[[Any], Any]:
    return click.option("--overwrite", is_flag=True, help=help)


def claim_output(output: str | None, overwrite: bool, *, folder: bool = False) -> None:
    """The habit of every command: a file (or non-empty folder) the user named with -o is never
    replaced without --overwrite; checked before any work is done."""
    from cnnlab.core.files import check_folder_free, check_output_free

    if folder:
        check_folder_free(output, overwrite, _("-o/--output folder"))
    else:
        check_output_free(output, overwrite, _("-o/--output file"))


def regenerating(marker: Path, folder: Path) -> Callable[[], None]:
    """The other habit: a command that rewrote its own derived files inside a run folder says so on
    stderr. Call the result when the work is done (a failed command says only its error)."""
    existed = marker.exists()

    def done() -> None:
        if existed:
            click.echo(_("note: rewrote the files cnnlab derived in {folder}").format(folder=folder), err=True)

    return done


def progress_default() -> bool:
    """The bar is for a person at a terminal: off in pipes and logs unless asked for (tqdm's disable=None)."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def _lang_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    code = normalize(value)
    if code is None:
        raise click.BadParameter(f"{value!r}: choose one of {', '.join(LANGUAGES)}")
    # For the whole command, in a ContextVar (no process-wide state): left when the command ends.
    ctx.with_resource(use_language(code))
    return code


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cnnlab")
@click.option("--lang", metavar="LANG", default=None, expose_value=False, is_eager=True, callback=_lang_option,
              help=f"Language of what cnnlab prints and draws: {', '.join(LANGUAGES)}.  "
                   "[default: $CNNLAB_LANG, else the locale ($LANG), else en]")
def cli() -> None:
    """Train, understand and ship small convolutional image classifiers.

    Start with `cnnlab train` (the lesson's LeNet-5 recipe on MNIST), then
    `cnnlab evaluate RUN_DIR`. Shell completion (of commands, options and
    model, dataset and recipe names) in bash:
    eval "$(_CNNLAB_COMPLETE=bash_source cnnlab)"  (zsh_source, fish_source).
    """
    # Process-wide, so the command line applies it and library calls do not (benchmarks/README.md,
    # "Memory allocator"): batch buffers are reused instead of re-faulted. Not for serve: a server
    # must hand a large upload's memory back once answered (issue 16, benchmarks/serve_memory.py).
    if click.get_current_context().invoked_subcommand == "serve":
        tune_malloc_for_serving()
    else:
        tune_malloc()


# --- train ---------------------------------------------------------------------------------
# Its config options are generated from the config dataclasses (core/config.py), where every
# flag's default, allowed values and help are written once. Parameter ``section__key`` sets cfg.section.key.

_COMPLETE = {"data.dataset": complete_datasets, "model.name": complete_models}
_HELP_LISTS = {"data.dataset": datasets_help, "model.name": models_help}


def config_option(section: str, f: Any) -> Callable[[Any], Any]:
    """The click option of one config field: ``--flag VALUE``, or ``--flag/--no-flag`` for a bool."""
    meta = f.metadata["cli"]
    flag = meta["flag"] or "--" + f.name.replace("_", "-")
    dotted = f"{section}.{f.name}"
    if meta["default_text"]:
        shown = meta["default_text"]
    elif isinstance(f.default, bool):
        shown = "on" if f.default else "off"
    else:
        shown = "" if f.default is None else str(f.default)
    kwargs: dict[str, Any] = {
        "default": None,  # None: the recipe's value (the config default unless a recipe sets it)
        "help": meta["help"] + (f"  [default: {shown}]" if shown else ""),
        "cls": LazyHelpOption, "help_suffix": _HELP_LISTS.get(dotted), "shell_complete": _COMPLETE.get(dotted),
    }
    if isinstance(f.default, bool):
        return click.option(f"{flag}/--no-{flag[2:]}", f"{section}__{f.name}", **kwargs)
    kinds = field_kinds(f)
    kind: Any = int if "int" in kinds else float if "float" in kinds else str
    if meta["choices"]:
        kind = click.Choice(meta["choices"])
    elif meta["path"]:
        kind = click.Path(file_okay=False)
    return click.option(flag, f"{section}__{f.name}", type=kind, **kwargs)


def config_options(fn: Any) -> Any:
    for section, f in reversed(config_fields()):
        if "cli" in f.metadata:
            fn = config_option(section, f)(fn)
    return fn


def config_changes(opts: dict[str, Any]) -> dict[str, Any]:
    """``{"section.key": value}`` of every config option; ``None`` (not given) is what Config.apply keeps."""
    return {key.replace("__", "."): value for key, value in opts.items() if "__" in key}


@cli.command()
@config_options
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Where the run is written.  [default: runs/MODEL-DATASET-TIME]")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="Continue the run in this directory from its last.pt, as it was configured (only how it "
                   "computes may change: --epochs, --device, --threads, --data-dir, --progress, ...).")
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Train data-parallel in N local processes (DistributedDataParallel; gloo on CPU, nccl on GPU). "
                   "--batch-size is per process. Under torchrun leave this out.")
@click.option("--recipe", default=None, shell_complete=complete_recipes,
              help=f"Start from a named recipe ({', '.join(list_recipes())}) or a TOML file; "
                   "other flags override it.  [default: tutorial, the lesson's]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="A config file: TOML (as --print-config writes it) or a run's config.json; other flags "
                   "override it.")
@click.option("--print-config", is_flag=True,
              help="Print the resolved config as TOML (for --config) and exit without training.")
@click.option("--lr-find", is_flag=True,
              help="Do not train: run the learning-rate range test on this config (a copy of the model, a few hundred "
                   "steps, nothing written) and print the suggested --lr.")
@click.option("--lr-find-plot", type=click.Path(dir_okay=False), default=None, metavar="PNG",
              help="With --lr-find: also draw the loss curve into this new PNG file.")
@json_option
@friendly_errors
def train(**opts: Any) -> None:
    """Train a model; by default the lesson's recipe (LeNet-5, MNIST, Adam 1e-3, batch 32, 5 epochs).

    After every epoch it prints train and validation loss/accuracy, keeps the
    best checkpoint by validation loss and a full-state last.pt; at the end the
    best model is scored on the test set and the classification report is
    printed. Running the same command again on the same --run-dir resumes an
    interrupted run (Ctrl-C saves and exits with 130). The run stores its data
    folder as an absolute path, so it evaluates from any working directory.

    `cnnlab train --print-config [options] > my.toml` writes the config those
    options make; `cnnlab train --config my.toml` (or a run's config.json)
    trains it.

    Several processes: `cnnlab train --nproc 2 ...` on one machine, or
    `torchrun --nproc_per_node=4 -m cnnlab train ...` (also across machines);
    see docs/distributed.md.
    """
    from cnnlab.core.runs import default_run_dir
    from cnnlab.engine.distributed import launch
    from cnnlab.engine.tracking import require_tensorboard
    from cnnlab.engine.train import resume_config

    changes = config_changes(opts)
    if changes.get("train.tensorboard") and not opts["print_config"]:
        require_tensorboard()  # before any data is read or a run folder is made
    if changes.get("train.progress") is None and not opts["print_config"]:
        changes["train.progress"] = progress_default()
    run_dir = opts["run_dir"]
    if opts["lr_find"] or opts["lr_find_plot"]:
        return lr_find_command(opts, changes)
    if opts["resume_dir"]:
        if run_dir and Path(run_dir) != Path(opts["resume_dir"]):
            raise click.UsageError("--resume RUN_DIR and --run-dir name different folders; give only --resume")
        if opts["recipe"] or opts["config_file"]:
            raise click.UsageError("--resume continues a run as it was configured; drop --recipe/--config")
        run_dir = opts["resume_dir"]
        cfg = resume_config(run_dir, changes)  # the library says which settings may change
    else:
        cfg = base_config(opts).apply(changes)
    if opts["print_config"]:
        click.echo(cfg.to_toml(), nl=False)
        return
    run_dir = run_dir or default_run_dir(cfg)  # named once, so spawned workers agree on it
    kwargs: dict[str, Any] = {"as_json": True} if opts["as_json"] else {}
    if (opts["nproc"] or 1) > 1:  # spawned workers do not inherit this thread's language (a ContextVar)
        kwargs["lang"] = language()
    worker = functools.partial(train_and_report, **kwargs) if kwargs else train_and_report
    code = launch(worker, cfg, run_dir, nproc=opts["nproc"])
    if code:
        sys.exit(code)


def train_and_report(cfg: Any, run_dir: Any, as_json: bool = False, lang: str | None = None) -> None:
    """One training process (of one, or of several): train, then rank 0 prints the test report.

    ``as_json``: the epoch lines go to stderr and stdout gets one JSON document (the run's result).
    ``lang``: the language of the lines (a spawned worker's; otherwise the one in force).
    """
    with use_language(lang):
        _train_and_report(cfg, run_dir, as_json)


def _train_and_report(cfg: Any, run_dir: Any, as_json: bool) -> None:
    from cnnlab.service.training import train_config
    from cnnlab.engine.distributed import is_main

    log = functools.partial(click.echo, err=True) if as_json else click.echo
    try:
        result = train_config(cfg, run_dir, log=log)
    except CnnlabError as exc:  # a distributed worker reports it itself (engine/distributed): hint it here
        exc.hint = exc.hint or cli_hint(exc)
        raise
    if not is_main():
        return
    if as_json:
        echo_json({"run": str(result.run.path), "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                   "seconds": round(result.seconds, 3), "resumed_from": result.resumed_from,
                   "history": result.history, "test": result.test.to_dict()})
        return
    click.echo("\n" + _("best epoch {epoch} (val loss {loss}); test set:").format(
        epoch=result.best_epoch, loss=format_float(result.best_val_loss)))
    click.echo(result.test.table())  # scikit-learn's report; its words translated in another language
    click.echo(_("test accuracy {accuracy}   run: {run}   ({seconds}s)").format(
        accuracy=format_percent(result.test.accuracy), run=result.run.path, seconds=format_float(result.seconds, 1)))


def lr_find_command(opts: dict[str, Any], changes: dict[str, Any]) -> None:
    """``train --lr-find``: the range test on the config the same flags would train; no run folder."""
    from cnnlab.core.files import save_figure
    from cnnlab.service.lr_find import lr_find

    if opts["resume_dir"] or opts["run_dir"] or (opts["nproc"] or 1) > 1:
        raise click.UsageError(_("--lr-find trains nothing: drop --resume, --run-dir and --nproc"))
    if opts["lr_find_plot"]:
        if opts["lr_find_plot"] == STDOUT:
            raise click.UsageError(_("--lr-find-plot takes a file name (the suggestion is what goes to stdout)"))
        figure_format(opts["lr_find_plot"])
        if Path(opts["lr_find_plot"]).exists():  # train has no --overwrite: the user's file is never replaced
            raise SaveError(_("--lr-find-plot {path} already exists; give a new file name").format(
                path=opts["lr_find_plot"]))
    cfg = base_config(opts).apply(changes)
    bar = None
    if cfg.train.progress:
        from tqdm.auto import tqdm

        from cnnlab.engine.lr_find import NUM_IT
        from cnnlab.engine.progress import MININTERVAL

        bar = tqdm(total=NUM_IT, desc="lr find", mininterval=MININTERVAL, leave=False, file=sys.stderr, unit="step")
    try:
        result = lr_find(cfg, on_step=(lambda step, lr, loss: bar.update(1)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    if opts["lr_find_plot"]:
        save_figure(result.plot(), opts["lr_find_plot"])
        click.echo(_("wrote {path}").format(path=opts["lr_find_plot"]), err=True)
    if opts["as_json"]:
        echo_json(result.to_dict())
    else:
        click.echo(result.text())


def base_config(opts: dict[str, Any]) -> Any:
    """The recipe (--recipe / --config) that command-line flags then override; the lesson's by default."""
    from cnnlab.core.config import load_recipe

    if opts.get("recipe") and opts.get("config_file"):
        raise click.UsageError("give either --recipe or --config, not both")
    source = opts.get("recipe") or opts.get("config_file")
    return load_recipe(source) if source else Config()


# --- evaluate ------------------------------------------------------------------------------


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@data_dir_option()
@device_option
@eval_batch_size_option
@json_option
@friendly_errors
def evaluate(run_dir: str, data_dir: str | None, device: str, eval_batch_size: int, as_json: bool) -> None:
    """Re-score a run's best checkpoint on the test set and rewrite its report files.

    Reads the data only: a missing dataset is an error, never a download.
    """
    from cnnlab.analysis.report import evaluate_run
    from cnnlab.core.runs import RunDir

    said = regenerating(RunDir(Path(run_dir)).report_json, Path(run_dir))
    report = evaluate_run(run_dir, data_dir=data_dir, device=device, batch_size=eval_batch_size)
    said()
    if as_json:  # the report.json just written, and the run it belongs to
        from cnnlab.core.runs import RunDir, read_run_file

        echo_json({"run": run_dir, **json.loads(read_run_file(RunDir(Path(run_dir)).report_json))})
        return
    click.echo(report.table())
    click.echo(_("test accuracy {accuracy}  loss {loss}  ({images} images)").format(
        accuracy=format_percent(report.accuracy), loss=format_float(report.loss), images=report.num_images))


# --- predict / export ----------------------------------------------------------------------


def format_table(results: Any, top_k: int, *, max_path: int = 60) -> str:
    """A plain-text table: one line per predicted file, top-k as ``label (prob)``."""
    ok = [r for r in results if r.prediction is not None]
    if not ok:
        return ""

    def short(p: str) -> str:
        return p if len(p) <= max_path else "..." + p[-(max_path - 3):]

    paths = [short(r.path) for r in ok]
    width = max(len("path"), *(len(p) for p in paths))
    cells = [[f"{lab} ({prob:.1%})" for lab, prob in zip(r.prediction.labels, r.prediction.probs)] for r in ok]
    k = max(len(c) for c in cells)
    col = max([len("top-1")] + [len(c) for row in cells for c in row])
    lines = [f"{'path':<{width}}  " + "  ".join(f"{f'top-{i + 1}':<{col}}" for i in range(k))]
    for p, row in zip(paths, cells):
        lines.append(f"{p:<{width}}  " + "  ".join(f"{c:<{col}}" for c in row))
    return "\n".join(line.rstrip() for line in lines)


@cli.command()
@click.argument("model", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="Classes reported per image.")
@output_option("Write the predictions to this CSV or JSON file (by suffix; see --format); - for stdout.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default=None,
              help="Output file format.  [default: from the --output suffix, else csv]")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output file / --save-preprocessed files.")
@click.option("--save-preprocessed", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write each network input (what the model actually saw) as a PNG into DIR.")
@eval_batch_size_option
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Decoding threads.  [default: cores, at most 4]")
@device_option
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No table on screen (errors and the summary are still printed).")
@friendly_errors
def predict(model: str, inputs: tuple[str, ...], top_k: int, output: str | None, fmt: str | None, overwrite: bool,
            save_preprocessed: str | None, eval_batch_size: int, workers: int | None, device: str, as_json: bool,
            quiet: bool) -> None:
    """Predict the class of your own images with a trained model.

    MODEL is a run directory (its best.pt) or a checkpoint file. INPUTS are image
    files and folders (searched recursively); PNG, JPEG, BMP, GIF, TIFF and WebP
    are recognised by content, in any mode (grayscale, RGB, RGBA, palette, 16-bit).
    Each image is prepared the way the model's training data was (for MNIST:
    inverted if dark-on-light, cropped to the ink, fitted to 20x20, centred by
    mass in 28x28). A file that cannot be used gets one error line and the others
    are still predicted; the exit code is 1 when any file failed. The table (or
    with --json, -o -, the results) go to stdout, errors and the summary to stderr.

    \b
    Example:
      cnnlab predict runs/lenet5 my_digit.png scans/ --top-k 3 -o preds.csv
    """
    from cnnlab.core.files import check_output_free, claim_folder
    from cnnlab.service.predictor import load, results_json, write_results

    if as_json and output == STDOUT:
        raise click.UsageError("--json and -o - both write to stdout; give one of them")
    if output != STDOUT:
        check_output_free(output, overwrite)
    if save_preprocessed is not None:  # --overwrite removes only the PNGs an earlier --save-preprocessed wrote
        claim_folder(save_preprocessed, overwrite)
    predictor = load(model, device=device, batch_size=eval_batch_size)

    def report_error(result: Any) -> None:
        if result.error:
            click.echo(f"error: {result.path}: {result.error}", err=True)

    results = predictor.predict_files(inputs, top_k, save_preprocessed=save_preprocessed, workers=workers,
                                      on_result=report_error)
    if as_json:
        echo_json(results_json(results, predictor, top_k))
    elif not quiet and output != STDOUT and (table := format_table(results, top_k)):
        click.echo(table)
    if output:
        write_results(results, output, predictor, top_k, fmt)
    failed = len(results.failed)
    summary = _("{ok} predicted, {failed} failed").format(ok=len(results) - failed, failed=failed)
    if results.skipped:
        summary += _(", {n} non-image file(s) in folders skipped").format(n=len(results.skipped))
    if output and output != STDOUT:
        summary += _("; wrote {path}").format(path=output)
    if save_preprocessed:
        summary += _("; network inputs in {folder}/").format(folder=save_preprocessed)
    click.echo(summary, err=True)
    if not len(results):
        click.echo(_("error: no image files found in {inputs}").format(inputs=", ".join(inputs)), err=True)
    if failed or not len(results):
        sys.exit(1)


@cli.command()
@click.argument("model", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default=EXPORT_FORMATS[0], show_default=True,
              help="onnx (dynamo exporter; any runtime), pt2 (torch.export ExportedProgram; PyTorch) or "
                   "torchscript (torch.jit, for LibTorch; deprecated by PyTorch).")
@output_option("File to write; - for stdout.  [default: model.onnx / model.pt2 / model.torchscript.pt next to the "
               "checkpoint]")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--opset", type=click.IntRange(min=7), default=None, help="ONNX opset.  [default: 18]")
@click.option("--verify-images", multiple=True, type=click.Path(), metavar="PATH",
              help="Image or folder to compare the export on (repeatable).  [default: the dataset's test images]")
@data_dir_option()
@click.option("--verify-count", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Test images used for the comparison.")
@json_option
@friendly_errors
def export(model: str, fmt: str, output: str | None, overwrite: bool, opset: int | None,
           verify_images: tuple[str, ...], data_dir: str | None, verify_count: int, as_json: bool) -> None:
    """Export a trained model to ONNX or a torch.export program (.pt2), checked against PyTorch.

    MODEL is a run directory (its best.pt) or a checkpoint file. The exported
    model takes a float32 batch (N, C, H, W) of any size N, already preprocessed,
    and returns logits; it carries the class names and the preprocessing recipe as
    metadata. After exporting, the file is loaded back (ONNX with onnxruntime when
    installed, else onnx's reference evaluator; .pt2 with torch.export.load) and
    its outputs are compared with PyTorch's on real inputs; the largest difference
    is reported and the file is written only if they agree. Export runs on the CPU.
    """
    from cnnlab.apps.export import export_model

    if as_json and output == STDOUT:
        raise click.UsageError("--json and -o - both write to stdout; give one of them")
    result = export_model(model, fmt, output, overwrite=overwrite, opset=opset, verify_images=list(verify_images),
                          data_dir=data_dir, verify_count=verify_count)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(result.summary(), err=output == STDOUT)


# --- serve ---------------------------------------------------------------------------------


@cli.command()
@click.argument("run_dir", type=click.Path(exists=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The default serves this machine only; 0.0.0.0 opens it to your network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free port).")
@click.option("--max-upload-mb", type=click.FloatRange(min=0.001), default=5.0, show_default=True,
              help="Largest request body accepted, in MiB; bigger uploads get HTTP 413.")
@device_option
@friendly_errors
def serve(run_dir: str, host: str, port: int, max_upload_mb: float, device: str) -> None:
    """Serve a page where you draw a digit and watch the model classify it live.

    RUN_DIR is a run directory (or a checkpoint file). The page has a drawing
    canvas (mouse and touch), an upload button, live top-k probabilities and
    the 28x28 image the model saw; the JSON API is POST /api/predict and
    GET /api/model, documented at /docs. Needs the serve extra:
    pip install 'cnnlab[serve]'.
    """
    from cnnlab.apps.serve import serve as run_server

    try:
        run_server(run_dir, host=host, port=port, max_bytes=int(max_upload_mb * 1024 * 1024), device=device,
                   log=lambda line: click.echo(line, err=True))  # status and warnings: stderr
    except KeyboardInterrupt as exc:  # uvicorn finished its graceful shutdown, then re-raised the signal
        name, code = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("SIGINT", 130)
        click.echo(f"{name}: the server stopped", err=True)
        sys.exit(code)


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
@click.option("--inside/--no-inside", default=True, show_default=True,
              help="Also draw the attributions over the top losses and the t-SNE/UMAP embedding (the slowest part).")
@data_dir_option()
@device_option
@eval_batch_size_option
@json_option
@click.pass_context
@friendly_errors
def analyze(ctx: click.Context, run_dir: str, classes: str | None, per_class: int, top_k: int, bins: int,
            no_html: bool, inside: bool, data_dir: str | None, device: str, eval_batch_size: int,
            as_json: bool) -> None:
    """Study a run's mistakes on the test set; everything is written to RUN_DIR/analysis/.

    Confusion matrix (counts and row-normalised), a gallery of misclassified
    images per class titled "pred (prob)", the top-losses gallery (likely
    mislabelled images), the most-confused pairs (printed, and as CSV),
    per-class accuracy, calibration (ECE, reliability diagram, confidence
    histograms), training curves, and one self-contained index.html. The
    lesson's figure: cnnlab analyze RUN_DIR --classes 8 4 9 --per-class 10
    """
    from cnnlab.analysis.report import interpret_run

    dirs = [a for a in ctx.args if Path(a).is_dir()]
    if classes is not None and not Path(run_dir).is_dir() and len(dirs) == 1:
        # `--classes 8 4 9 RUN_DIR`: click took the second class for RUN_DIR; put them back in place.
        ctx.args.remove(dirs[0])
        ctx.args.insert(0, run_dir)
        run_dir = dirs[0]
    if ctx.args and classes is None:
        raise click.UsageError(f"unexpected arguments: {' '.join(ctx.args)}")
    wanted = [c for part in [classes or "", *ctx.args] for c in part.split(",") if c.strip()] or None
    from cnnlab.core.runs import RunDir

    analysis = RunDir(Path(run_dir)).analysis
    said = regenerating(analysis / "summary.json", analysis)
    interp = interpret_run(run_dir, data_dir=data_dir, device=device, batch_size=eval_batch_size)
    result = interp.save(classes=wanted, per_class=per_class, top_k=top_k, n_bins=bins, html=not no_html,
                         inside=inside)
    if as_json:  # summary.json as written, the run, and every file's path
        echo_json({"run": run_dir, **result.summary, "files": {k: str(v) for k, v in result.files.items()}})
    else:
        echo_result(result)
    said()


@cli.command("show-data")
@dataset_option("mnist", "Dataset name.")
@click.option("--n", "n", type=click.IntRange(min=1), default=10, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which random images (same seed, same images).")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True, help="Dataset split.")
@output_option("PNG to write; - for stdout.  [default: DATASET_samples.png]")
@overwrite_option()
@data_dir_option("$CNNLAB_DATA_DIR, else ~/.cache/cnnlab/data")
@click.option("--download/--no-download", default=True, help="Download the dataset when its files are missing.  "
              "[default: on]")
@json_option
@friendly_errors
def show_data(dataset: str, n: int, seed: int, split: str, output: str | None, overwrite: bool,
              data_dir: str | None, download: bool, as_json: bool) -> None:
    """Save a grid of random labelled images from a dataset (the lesson's first figure).

    A file named with -o is not replaced without --overwrite; the default
    DATASET_samples.png is cnnlab's own and is replaced (with a note on stderr).
    From Python the same grid is cnnlab.show_batch(DATASET, n=N), shown inline.
    """
    from cnnlab.analysis.report import show_data as save_samples
    from cnnlab.core.runs import dataset_slug

    if as_json and output == STDOUT:
        raise click.UsageError("--json and -o - both write to stdout; give one of them")
    claim_output(output, overwrite)  # before the data is read
    if output not in (None, STDOUT):
        figure_format(output)  # an unknown suffix is one line now, not a matplotlib error after the work
    target = Path(output or f"{dataset_slug(dataset)}_samples.png")
    replacing = output is None and target.exists()
    path = save_samples(dataset, out=target if output != STDOUT else STDOUT, data_dir=data_dir, n=n,
                        seed=seed, split=split, download=download)
    if as_json:
        echo_json({"path": str(path), "dataset": dataset, "split": split, "n": n, "seed": seed})
    elif output != STDOUT:
        click.echo(_("wrote {path}").format(path=path), err=True)
    if replacing:
        click.echo(_("note: replaced the earlier {path}").format(path=target), err=True)


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@output_option("Folder for compare.json (and, for two runs, disagreements.png).  [default: for two runs "
               "RUN_A/analysis/compare-<RUN_B name>; for more, nothing is written]", folder=True)
@overwrite_option("Write into a non-empty -o/--output folder (its files may be replaced).")
@click.option("--max-images", type=click.IntRange(min=0), default=40, show_default=True,
              help="Disagreement images drawn (two runs).")
@data_dir_option("each run's")
@device_option
@eval_batch_size_option
@json_option
@friendly_errors
def compare(runs: tuple[str, ...], output: str | None, overwrite: bool, max_images: int, data_dir: str | None,
            device: str, eval_batch_size: int, as_json: bool) -> None:
    """Which of two or more runs is better on the test set, and is the difference significant?

    For two runs: both test accuracies and their difference, McNemar's exact test
    on the paired predictions, and the images where the runs disagree. For more
    (`cnnlab compare runs/a runs/b runs/c`, or a quoted glob: `cnnlab compare
    'runs/lenet5-*'`): every run's accuracy and the pairwise table, with p-values
    adjusted for the number of pairs (Holm). Runs scored on different test sets
    are refused.
    """
    from cnnlab.analysis.report import compare_many, compare_runs

    from cnnlab.core.runs import RunDir

    folder_output(output, "compare")
    claim_output(output, overwrite, folder=True)
    paths = expand_runs(runs)
    if len(paths) < 2:
        raise click.UsageError(_("compare needs at least two runs; {args} gave {n}").format(
            args=" ".join(runs), n=len(paths)))
    if len(paths) > 2:
        many = compare_many(paths, out=output, data_dir=data_dir, device=device, batch_size=eval_batch_size)
        if as_json:
            echo_json({**many.to_dict(), "files": {k: str(v) for k, v in many.files.items()}})
        else:
            echo_result(many)
        return
    default = RunDir(Path(paths[0])).analysis / f"compare-{Path(paths[1]).resolve().name}"
    said = regenerating(default / "compare.json", default) if output is None else (lambda: None)
    result = compare_runs(paths[0], paths[1], out=output, max_images=max_images, data_dir=data_dir, device=device,
                          batch_size=eval_batch_size)
    if as_json:
        echo_json({**result.to_dict(), "files": {k: str(v) for k, v in result.files.items()}})
    else:
        echo_result(result)
    said()


def expand_runs(args: tuple[str, ...]) -> list[str]:
    """Run folders from arguments: a pattern with ``*``, ``?`` or ``[`` (quoted, so the shell left it) is
    expanded to the run folders it matches, in name order."""
    import glob

    out: list[str] = []
    for arg in args:
        if any(ch in arg for ch in "*?[") and not Path(arg).exists():
            matches = sorted(p for p in glob.glob(arg) if (Path(p) / "config.json").is_file())
            if not matches:
                raise click.UsageError(_("no run folders match {pattern}").format(pattern=arg))
            out += matches
        else:
            out.append(arg)
    return out


# --- runs ----------------------------------------------------------------------------------


@cli.command("runs")
@click.argument("folder", default="runs", required=False, type=click.Path(file_okay=False))
@click.option("--sort", "sort_key", default=None, metavar="KEY",
              help="Sort by a column (model, test_acc, started, ...); -KEY sorts descending.  [default: started]")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Only runs where a column or config field has this value (repeatable): model=lenet5, "
                   "optim.lr=0.001, lr=0.001, state=finished.")
@json_option
@friendly_errors
def runs_command(folder: str, sort_key: str | None, filters: tuple[str, ...], as_json: bool) -> None:
    """List every run under FOLDER (default runs/): model, data, recipe, epochs, accuracies, time, state.

    State is finished, interrupted (resume it with `cnnlab train --resume RUN`),
    training (a process holds the run's lock now), incomplete (no epoch finished)
    or broken (files missing or damaged; the reason is shown). Only the runs'
    small files are read, never a checkpoint.
    """
    from cnnlab.service.runs import format_runs, list_runs

    records = list_runs(folder, filters=filters, sort=sort_key)
    if as_json:
        echo_json({"folder": folder, "runs": [r.to_dict() for r in records]})
        return
    if not records:
        click.echo((_("no runs under {folder} match the filters") if filters else _("no runs under {folder}"))
                   .format(folder=folder), err=True)
        return
    click.echo(format_runs(records, folder))


# --- models, layers, visualize ---------------------------------------------------------------


def _input_shape(input_text: str | None, dataset: str | None) -> tuple[tuple[int, int, int], int]:
    from cnnlab.models.summary import parse_shape

    if input_text and dataset:
        raise click.UsageError("give either --input or --dataset, not both")
    if dataset:
        from cnnlab.data.sets import input_shape  # only then: it brings in the dataset readers (PIL)

        return input_shape(dataset)
    return (parse_shape(input_text) if input_text else (1, 28, 28)), 10


@cli.command()
@click.option("--input", "input_text", default=None, help="Input shape CxHxW.  [default: 1x28x28]")
@dataset_option(None, "Use this dataset's input shape and class count instead.")
@json_option
@friendly_errors
def models(input_text: str | None, dataset: str | None, as_json: bool) -> None:
    """List the models with their parameters and multiply-adds (MACs) for one input image."""
    if not (input_text or dataset or as_json):  # MNIST's input: the declared table, no torch (core/catalog.py)
        from cnnlab.core.catalog import declared_models_table

        click.echo(declared_models_table())
        return
    from cnnlab.models.summary import models_info, models_table

    shape, classes = _input_shape(input_text, dataset)
    if as_json:
        echo_json({"input_shape": list(shape), "num_classes": classes, "models": models_info(shape, classes)})
    else:
        click.echo(models_table(shape, classes))


@cli.command()
@click.argument("model", required=False, shell_complete=complete_models)
@click.option("--input", "input_text", default=None, help="Input shape CxHxW for MODEL.  [default: 1x28x28]")
@dataset_option(None, "Use this dataset's input shape and class count for MODEL.")
@click.option("--conv", "conv_kernel", type=int, default=None, help="Output size of a Conv2d with this kernel size.")
@click.option("--pool", "pool_kernel", type=int, default=None, help="Output size of a pooling layer with this kernel size.")
@click.option("--size", type=int, default=28, show_default=True, help="Input side for --conv/--pool.")
@click.option("--stride", type=int, default=None, help="Stride for --conv/--pool.  [default: 1 / the kernel size]")
@click.option("--padding", type=int, default=0, show_default=True, help="Padding for --conv/--pool.")
@click.option("--dilation", type=int, default=1, show_default=True, help="Dilation for --conv/--pool.")
@click.option("--ceil-mode", is_flag=True, help="--pool: round the output size up, as ceil_mode=True does.")
@click.option("--pool-example", is_flag=True, help="Show a worked 4x4 example of max and average pooling.")
@json_option
@friendly_errors
def layers(model: str | None, input_text: str | None, dataset: str | None, conv_kernel: int | None,
           pool_kernel: int | None, size: int, stride: int | None, padding: int, dilation: int, ceil_mode: bool,
           pool_example: bool, as_json: bool) -> None:
    """Explore layers: each layer of MODEL with output shape, parameters and MACs, or conv/pool arithmetic.

    `cnnlab layers lenet5` lists LeNet-5 layer by layer (416,520 MACs for one 28x28 image).
    `cnnlab layers --conv 5 --padding 2 --size 28` and `cnnlab layers --pool 2 --size 28` work out
    output sizes with PyTorch's formulas; --pool also shows a worked example of max and average pooling.
    With --json: {"model": ..., "conv": ..., "pool": ...} for what was asked (not the worked example).
    """
    from cnnlab.models import shapes
    from cnnlab.models.summary import summarize_model

    if not (model or conv_kernel or pool_kernel or pool_example):
        raise click.UsageError("name a MODEL, or give --conv K, --pool K or --pool-example")
    if as_json:
        if not (model or conv_kernel or pool_kernel):
            raise click.UsageError("--json covers MODEL, --conv and --pool; --pool-example is text only")
        doc: dict[str, Any] = {}
        if model:
            shape, classes = _input_shape(input_text, dataset)
            doc["model"] = summarize_model(model, shape, classes).to_dict()
        if conv_kernel is not None:
            s = 1 if stride is None else stride
            doc["conv"] = {"size": size, "kernel": conv_kernel, "stride": s, "padding": padding, "dilation": dilation,
                           "output": shapes.conv_output_size(size, conv_kernel, s, padding, dilation)}
        if pool_kernel is not None:
            s = pool_kernel if stride is None else stride
            doc["pool"] = {"size": size, "kernel": pool_kernel, "stride": s, "padding": padding, "dilation": dilation,
                           "ceil_mode": ceil_mode,
                           "output": shapes.pool_output_size(size, pool_kernel, s, padding, dilation, ceil_mode)}
        echo_json(doc)
        return
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
@output_option("Folder for the PNGs.  [default: RUN_DIR/visualize]", folder=True)
@overwrite_option("Write into a non-empty -o/--output folder (its files may be replaced).")
@click.option("--index", type=int, default=None, help="Which test image to follow through the network.  [default: 0]")
@click.option("--image", type=click.Path(dir_okay=False), default=None,
              help="Your own image instead of a test image (preprocessed as `cnnlab predict` does).")
@click.option("--target", default=None, help="The class whose attribution to show (name).  [default: the predicted one]")
@click.option("--method", type=click.Choice(["integrated_gradients", "saliency", "gradcam"]),
              default="integrated_gradients", show_default=True, help="How the attribution is computed.")
@data_dir_option()
@click.option("--max-maps", type=int, default=32, show_default=True, help="At most this many feature maps per layer.")
@device_option
@json_option
@friendly_errors
def visualize(run_dir: str, output: str | None, overwrite: bool, index: int | None, image: str | None,
              target: str | None, method: str, data_dir: str | None, max_maps: int, device: str,
              as_json: bool) -> None:
    """Follow one image through the network: every conv layer's filters and feature maps, each conv kernel's
    arithmetic, and which pixels drove the prediction (attribution). Writes PNGs (their paths on stdout,
    one per line), or with --json prints the numbers (prediction, each layer's shape and range, the
    attribution map) and writes nothing."""
    from cnnlab.core.runs import RunDir
    from cnnlab.service import explain as explaining

    if index is not None and image is not None:
        raise click.UsageError("give --index (a test image) or --image (your own), not both")
    folder_output(output, "visualize")
    if as_json:
        ex, _caption = explaining.explain_run(run_dir, index=index, image=image, target=target, method=method,
                                              data_dir=data_dir, device=device)
        doc = ex.summary(values=True)
        doc["source"] = {"image": image} if image is not None else {"test_index": index or 0}
        echo_json(doc)
        return
    claim_output(output, overwrite, folder=True)
    default = RunDir(Path(run_dir)).visualize
    said = regenerating(default, default) if output is None else (lambda: None)
    _ex, paths = explaining.visualize(run_dir, output, index=index, image=image, target=target, method=method,
                                      max_maps=max_maps, data_dir=data_dir, device=device)
    for path in paths:
        click.echo(str(path))
    said()


def main() -> None:
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        cli(prog_name="cnnlab")
    except SystemExit as exc:
        # Without tearing down every imported module: ~0.4 s with torch, ~1 s after training (core/process.py).
        exit_now(exc.code)


if __name__ == "__main__":
    main()
