"""Train a CNN on MURA and report the MURA paper's study-level metrics.

    python3 examples/train_mura.py                       # synthetic replica, a few minutes on a CPU
    python3 examples/train_mura.py --data ~/MURA-v1.1 --size 128 --epochs 30 --device cupy
    python3 examples/train_mura.py --evaluate runs/mura/model.npz --data ~/MURA-v1.1

Without ``--data`` the script writes a small synthetic replica of MURA's
layout into the cache folder and trains on that: it shows the pipeline end to
end, but its numbers say nothing about X-rays.

It writes into ``--out``: ``model.npz`` (the epoch with the lowest validation
loss), ``last.npz`` (the latest epoch, for ``--resume``), ``run.json`` (the run's
options and the training images' pixel statistics, for ``--evaluate`` and ``--resume``),
``history.csv``, ``predictions.csv`` (one row per validation study),
``metrics.json``, and the plots ``roc.png``, ``confusion.png`` and ``curves.png``.
A new run refuses an ``--out`` holding any of them unless given ``--overwrite``.
"""
import argparse
import csv
import importlib.util
import io
import json
import logging
import math
import os
import shlex
import sys
import textwrap
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import minidl  # noqa: E402
from minidl import metrics, plots  # noqa: E402
from minidl.architectures import ARCHITECTURES, classifier_head, split_base  # noqa: E402
from minidl.backend import device_name, set_backend  # noqa: E402
from minidl.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau  # noqa: E402
from minidl.datasets import mura  # noqa: E402
from minidl.losses import CrossEntropy  # noqa: E402
from minidl.optimizers import SGD, Adam, RMSProp  # noqa: E402
from minidl.utils import atomic_path  # noqa: E402

log = logging.getLogger("train_mura")

#: Cohen's kappa of the MURA paper's model (a 169-layer DenseNet at 320 px) on
#: its hidden test set (Rajpurkar et al., arXiv:1712.06957, Table 2): a
#: reference point, not a like-for-like comparison.
PAPER_KAPPA = {
    "XR_ELBOW": 0.710, "XR_FINGER": 0.389, "XR_FOREARM": 0.737, "XR_HAND": 0.851,
    "XR_HUMERUS": 0.600, "XR_SHOULDER": 0.729, "XR_WRIST": 0.931, "overall": 0.705,
}

OPTIMIZERS = {"adam": Adam, "sgd": lambda lr: SGD(lr, momentum=0.9), "rmsprop": RMSProp}
CLASS_WEIGHTS = ("study-type", "overall", "none")
VGG_WIDTH_DIVISOR = 8  # --vgg-width-divisor's default, with --model vgg16
SYNTHETIC_PATIENTS = 400  # --synthetic-patients's default, without --data
# The defaults of the options that a run's run.json records for --evaluate and --resume.
DEFAULTS = {"size": 64, "resize": "pad", "seed": 0, "batch_size": 32}
#: --lr's default for each --model. On the synthetic replica the narrow VGG16 at 1e-3 can learn nothing in
#: 8 epochs (seed 0: a flat loss, every study called normal), and at 1e-4 learns with seeds 0, 1 and 2.
LEARNING_RATES = {"baseline": 1e-3, "vgg16": 1e-4}
INIT_FROM_LEARNING_RATE = 1e-3  # --lr's default with --init-from: a new head on a trained base
#: MURA's rule: a study is called abnormal when the mean probability of its images is above this.
THRESHOLD = 0.5
#: The files an evaluation writes, ``metrics.json`` last: it is there only beside the others of its evaluation.
RESULT_FILES = ("predictions.csv", "roc.png", "confusion.png", "curves.png", "metrics.json")
#: Every file a run writes into ``--out``: what makes a folder hold a run, and what ``--overwrite`` deletes.
RUN_FILES = ("run.json", "model.npz", "last.npz", "history.csv", *RESULT_FILES)


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    # allow_abbrev=False: the commands this script prints for the next run edit the flags as typed
    # (--overwrite out, --resume in), which an abbreviation such as --overw would slip past.
    p = argparse.ArgumentParser(description="Train a CNN on MURA (or a synthetic replica) and report "
                                            "study-level kappa, AUC, sensitivity and specificity.",
                                allow_abbrev=False)
    p.add_argument("--data", help="MURA-v1.1 folder (or its parent); default: a synthetic replica")
    p.add_argument("--out", help="output folder (default: runs/mura; with --evaluate, the model's folder)")
    p.add_argument("--size", type=int,
                   help="images are resized to SIZE x SIZE (default 64; with --evaluate, the model's size)")
    p.add_argument("--resize", choices=mura.RESIZE_MODES,
                   help="pad to square keeping the aspect ratio (default) or squash "
                        "(with --evaluate, as the model was trained)")
    p.add_argument("--epochs", type=int, default=8, help="at most this many epochs (default %(default)s)")
    p.add_argument("--batch-size", type=int,
                   help="images per batch (default 32; with --evaluate, the run's, as its run.json says)")
    p.add_argument("--lr", type=float,
                   help="initial learning rate (default 1e-3 for baseline and --init-from, 1e-4 for vgg16, "
                        "which at 1e-3 can learn nothing; with --resume, the run's)")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam",
                   help="sgd uses momentum 0.9 (default %(default)s)")
    p.add_argument("--dropout", type=float, default=0.5,
                   help="dropout rate before the last layer (default %(default)s)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random flips and rotations up to 30 degrees while training (default on)")
    p.add_argument("--class-weights", choices=CLASS_WEIGHTS, default="study-type", nargs="?", const="study-type",
                   help="weight each image's loss by the other class's share of the images, counted within "
                        "its study type as the MURA paper does (default), over the whole training set, "
                        "or not at all")
    p.add_argument("--no-class-weights", dest="class_weights", action="store_const", const="none",
                   help="the same as --class-weights none")
    p.add_argument("--model", choices=sorted(ARCHITECTURES),
                   help="the network (default baseline; none with --init-from, which brings its own base)")
    p.add_argument("--vgg-width-divisor", type=int,
                   help=f"with --model vgg16: divide VGG16's filter counts by this "
                        f"(default {VGG_WIDTH_DIVISOR}; 1 is VGG16 itself)")
    p.add_argument("--init-from", help="a trained model.npz whose convolutional base to reuse, with a new head")
    p.add_argument("--freeze-base", action="store_true", help="do not train the convolutional base")
    p.add_argument("--patience", type=int, default=4,
                   help="early-stopping patience in epochs (default %(default)s)")
    p.add_argument("--lr-patience", type=int, default=2,
                   help="epochs without a lower validation loss before the learning rate is divided by 10 "
                        "(default %(default)s)")
    p.add_argument("--device", choices=["numpy", "cupy"], default="numpy",
                   help="CPU or GPU (default %(default)s)")
    p.add_argument("--seed", type=int,
                   help="seeds the weights, shuffling, augmentation, dropout and the synthetic replica "
                        "(default 0; with --evaluate, the run's)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes decoding images for the cache (default: the CPUs, at most 8)")
    p.add_argument("--cache-dir", help="where decoded images are cached (default: $XDG_CACHE_HOME/minidl/mura, or ~/.cache/minidl/mura)")
    p.add_argument("--synthetic-patients", type=int,
                   help=f"without --data: training patients in the synthetic replica "
                        f"(default {SYNTHETIC_PATIENTS})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.npz")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds one, deleting the files the script writes there")
    p.add_argument("--evaluate", metavar="MODEL", help="only evaluate this model.npz on the validation split")
    p.add_argument("--quiet", action="store_true",
                   help="one line per epoch instead of progress bars (for a log file), and no model summary")
    args = p.parse_args(argv)
    args.argv = argv  # to say what to type next
    if args.freeze_base and not args.init_from:
        p.error("--freeze-base needs --init-from (a trained base to keep)")
    if args.init_from and (args.model is not None or args.vgg_width_divisor is not None):
        p.error("--init-from reuses the base of a trained model; it takes no --model or --vgg-width-divisor")
    if args.model is None and not args.init_from:
        args.model = "baseline"
    if args.vgg_width_divisor is not None and args.model != "vgg16":
        p.error(f"--vgg-width-divisor applies to --model vgg16 only, not --model {args.model}")
    if args.model == "vgg16" and args.vgg_width_divisor is None:
        args.vgg_width_divisor = VGG_WIDTH_DIVISOR
    if args.synthetic_patients is not None and args.data is not None:
        p.error("--synthetic-patients sizes the synthetic replica, which --data replaces")
    if args.resume and args.evaluate:
        p.error("--resume continues a run as it was; it takes no --evaluate")
    if args.overwrite and (args.resume or args.evaluate):
        p.error("--overwrite starts a new run; it takes no --resume or --evaluate")
    for option, value, valid, what in (
        ("--epochs", args.epochs, args.epochs >= 1, "at least 1"),
        ("--batch-size", args.batch_size, args.batch_size is None or args.batch_size >= 1, "at least 1"),
        ("--lr", args.lr, args.lr is None or 0 < args.lr < math.inf, "positive and finite"),
        ("--dropout", args.dropout, 0 <= args.dropout < 1, "in [0, 1)"),
        ("--size", args.size, args.size is None or args.size >= 1, "at least 1"),
        ("--vgg-width-divisor", args.vgg_width_divisor,
         args.vgg_width_divisor is None or args.vgg_width_divisor >= 1, "at least 1"),
        ("--patience", args.patience, args.patience >= 0, "0 or more"),
        ("--lr-patience", args.lr_patience, args.lr_patience >= 1, "at least 1"),
        ("--seed", args.seed, args.seed is None or args.seed >= 0, "0 or more"),
        ("--synthetic-patients", args.synthetic_patients,
         args.synthetic_patients is None or args.synthetic_patients >= 1, "at least 1"),
        ("--workers", args.workers, args.workers is None or args.workers >= 1, "at least 1"),
    ):
        if not valid:
            p.error(f"{option} must be {what}, got {value}")
    # A resumed run's weights come from its last.npz: the model it started from may be gone.
    init_from = None if args.resume else args.init_from
    for option, path, folder in (("--data", args.data, True), ("--evaluate", args.evaluate, False),
                                 ("--init-from", init_from, False)):
        if path is not None and not Path(path).exists():
            p.error(f"{option} {path}: no such file or folder")
        if path is not None and Path(path).is_dir() != folder:
            p.error(f"{option} {path}: " + ("a file, not a folder (give the MURA-v1.1 folder or its parent)"
                                             if folder else "a folder, not a model file (.npz)"))
    out_given = args.out is not None
    if not out_given:
        args.out = str(Path(args.evaluate).parent) if args.evaluate else "runs/mura"
    check_writable(p, "--out", args.out, hint="" if out_given or not args.evaluate else
                   " (--evaluate writes its results beside the model; give --out to write them elsewhere)")
    if args.cache_dir is not None:
        check_writable(p, "--cache-dir", args.cache_dir)
    if args.resume:
        missing = [name for name in ("last.npz", "history.csv") if not (Path(args.out) / name).exists()]
        if missing:
            started = (Path(args.out) / "run.json").exists()
            # Without the usage, which would bury the command to type under twenty lines of options.
            p.exit(2, f"{p.prog}: error: --resume: {args.out} holds no run to continue (no {' or '.join(missing)})"
                      + ("; its run stopped before the first epoch ended: start it again with "
                         + command_line(argv, add="--overwrite", drop="--resume") if started else "") + "\n")
    elif not args.evaluate and not args.overwrite:
        found = [name for name in RUN_FILES if (Path(args.out) / name).exists()]
        if found:
            resumable = {"last.npz", "history.csv"} <= set(found)
            # Without the usage, which would bury the command to type under twenty lines of options.
            p.exit(2, f"{p.prog}: error: --out {args.out} already holds a run ({', '.join(found)}): "
                      + ("continue it with --resume, " if resumable else "")
                      + "give another --out, or replace it (deleting those files) with --overwrite: "
                      + command_line(argv, add="--overwrite") + "\n")
    if args.lr is None and not args.resume:  # --resume: the run's (check_resumed_settings)
        args.lr = default_lr(args)
    if not args.evaluate:  # --evaluate takes these from the model and its run (evaluation_settings)
        fill_in_defaults(args)
    return args


def check_writable(parser, option, path, hint=""):
    """Exit naming ``option`` unless ``path`` is a folder this process can write into, or can be made one."""
    for nearest in (Path(path), *Path(path).parents):  # up to the first that exists ("." at the latest)
        if nearest.is_symlink() and not nearest.exists():  # making the folder would fail, after all the work
            parser.error(f"{option} {path}: {nearest} is a link to {os.readlink(nearest)}, which does not exist")
        if nearest.exists():
            break
    if not nearest.is_dir():
        parser.error(f"{option} {path}: {nearest} is a file, not a folder")
    if not os.access(nearest, os.W_OK | os.X_OK):  # a read-only file system too
        parser.error(f"{option} {path}: {nearest} cannot be written into (read-only, or not yours){hint}")


def fill_in_defaults(args, run=None):
    """Give the options left out the values of ``run`` (a ``run.json``'s dict) where it has them, else their defaults.

    The image size and resize mode, the batch size (a model trained at 320 px
    with small batches must be evaluated with them too), and the data:
    ``--data``, or for the synthetic replica its number of patients and seed.
    """
    run = run or {}
    if args.data is None and run.get("data") is not None:
        args.data = run["data"]
    adopt_cache_dir(args, run)
    defaults = dict(DEFAULTS)
    if args.data is None:
        defaults["synthetic_patients"] = SYNTHETIC_PATIENTS
    for option, default in defaults.items():
        if getattr(args, option) is None:
            setattr(args, option, default if run.get(option) is None else run[option])


def adopt_cache_dir(args, run):
    """Without ``--cache-dir``, the run's cache folder (its ``run.json``), where its replica and cache are, if it is
    still there."""
    folder = run.get("cache_dir")
    if args.cache_dir is not None or folder is None or not Path(folder).is_dir():
        return
    if not os.access(folder, os.W_OK | os.X_OK):  # another user's run: a cache it lacks could not be built there
        log.info("The run's cache folder %s (its run.json) cannot be written into: using %s", folder,
                 cache_folder(args))
        return
    args.cache_dir = folder
    log.info("Using the run's cache folder %s (its run.json)", folder)


def cache_folder(args):
    """The folder of the decoded images (and of the synthetic replica): ``--cache-dir`` or the default."""
    return Path(args.cache_dir) if args.cache_dir else mura.default_cache_dir()


def default_lr(args):
    """``--lr``'s default for the network of ``args``: see ``LEARNING_RATES``."""
    return INIT_FROM_LEARNING_RATE if args.init_from else LEARNING_RATES[args.model]


def command_line(argv, add, drop=None):
    """The command that ran this script with ``argv``, less the flag ``drop`` and with the flag ``add``."""
    return command([*(arg for arg in argv if arg not in (drop, add)), add])


def command(arguments):
    """The command line that runs this script with ``arguments``, quoted for a shell."""
    return shlex.join(["python3", script_as_typed(), *arguments])


def script_as_typed():
    """This script's path as the command line named it (else relative to the working folder, if under it)."""
    here = Path(__file__).resolve()
    if sys.argv and sys.argv[0] and Path(sys.argv[0]).resolve() == here:
        return sys.argv[0]
    try:
        return str(here.relative_to(Path.cwd()))
    except ValueError:
        return str(here)


#: The options that define a run: ``run.json`` records them, and ``--resume`` must repeat them.
RUN_OPTIONS = ("size", "resize", "data", "synthetic_patients", "seed", "model", "vgg_width_divisor", "init_from",
               "freeze_base", "optimizer", "lr", "batch_size", "dropout", "augment", "class_weights")


def run_option(args, option):
    """``args``'s value of a run option, paths made absolute (the same folder however it was named)."""
    value = getattr(args, option)
    if option == "data" and value is not None:
        return data_folder(value)
    return str(Path(value).resolve()) if option == "init_from" and value is not None else value


def data_folder(path):
    """The ``MURA-v1.1`` folder that ``--data path`` names, absolute: the folder or its parent name the same data."""
    try:
        return str(mura.find_root(path).resolve())
    except FileNotFoundError:  # not there (any more): as given, for the error that follows to name it
        return str(Path(path).resolve())


def write_run_settings(args, out, data):
    """``run.json``: the options of the run (all for ``--resume``) and the normalisation (for ``--evaluate``)."""
    settings = {option: run_option(args, option) for option in RUN_OPTIONS}
    settings.update(pixel_mean=data.mean, pixel_std=data.std, cache_dir=str(cache_folder(args).resolve()))
    with atomic_path(out / "run.json") as tmp, open(tmp, "w") as f:
        json.dump(settings, f, indent=2)


def run_settings(folder):
    """The ``run.json`` of the run in ``folder`` as a dict, or None if it has none."""
    run_file = Path(folder) / "run.json"
    return json.loads(run_file.read_text()) if run_file.exists() else None


def check_resumed_settings(args, out):
    """Refuse to resume a run with other options than its ``run.json`` records.

    ``--vgg-width-divisor`` counts only for a vgg16 run, ``--synthetic-patients`` only for one without
    ``--data`` and ``--model`` only for one without ``--init-from``: elsewhere they did not apply (a
    ``run.json`` written before they were refused there holds their defaults).

    An ``--lr`` left out is the run's: its default depends on the network, and was 1e-3 for every
    network before, as older ``run.json`` files hold (the resumed run goes on at the rate in ``last.npz``).
    """
    trained = run_settings(out) or {}
    if args.lr is None:
        args.lr = trained.get("lr", default_lr(args))
    adopt_cache_dir(args, trained)
    applies = {"vgg_width_divisor": trained.get("model") == "vgg16", "synthetic_patients": trained.get("data") is None,
               "model": trained.get("init_from") is None}
    if trained.get("data") is not None:  # recorded as typed by runs of before data_folder
        trained["data"] = data_folder(trained["data"])
    differ = [as_typed(option, trained[option], instead_of=run_option(args, option))
              for option in RUN_OPTIONS
              if option in trained and applies.get(option, True) and trained[option] != run_option(args, option)]
    if differ:
        sys.exit(f"train_mura.py: the run in {out} was started with other options; resume it as it was "
                 "started: " + "; ".join(differ))


def as_typed(option, value, instead_of):
    """How to type a run option's ``value`` where a command gave ``instead_of``.

    ``--size 64 (not 32)``, ``--no-augment``, ``--freeze-base``, ``without --init-from``.
    """
    flag = "--" + option.replace("_", "-")
    if option == "augment":
        return flag if value else "--no-augment"
    if value is True:
        return flag
    if value is None or value is False:
        return f"without {flag}"
    return f"{flag} {value}" + ("" if instead_of is None else f" (not {instead_of})")


def evaluation_settings(args, model):
    """Fill in ``--size``, ``--resize`` and the data for ``--evaluate`` from the model and its ``run.json``.

    A ``--size`` or ``--resize`` other than the run's is refused.

    Returns the training images' ``(mean, std)`` from ``run.json``, or None if it has none.
    """
    if model.input_shape is None:
        sys.exit(f"train_mura.py: {args.evaluate} was never built for an input size; it has not been trained")
    shape = tuple(model.input_shape)
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 1:
        sys.exit(f"train_mura.py: {args.evaluate} takes inputs of shape {shape}, not the square greyscale "
                 "images (S, S, 1) of this script")
    size = shape[0]
    if args.size is not None and args.size != size:
        sys.exit(f"train_mura.py: {args.evaluate} takes {size} x {size} images; --size {args.size} does not fit")
    args.size = size
    trained = run_settings(Path(args.evaluate).parent)
    if trained is None:
        options = ("resize", "batch_size") if args.data else ("resize", "batch_size", "seed")  # seed: the replica's
        assumed = [f"--{option.replace('_', '-')} {DEFAULTS[option]}" for option in options
                   if getattr(args, option) is None]
        if args.data is None and args.synthetic_patients is None:
            assumed.append(f"the synthetic replica of {SYNTHETIC_PATIENTS} patients")
        if assumed:
            log.warning("No run.json beside %s: assuming the defaults %s, which may not be the training run's",
                        args.evaluate, ", ".join(assumed))
        trained = {}
    trained_resize = trained.get("resize")
    if trained_resize is not None and args.resize not in (None, trained_resize):
        sys.exit(f"train_mura.py: {args.evaluate} was trained on images resized with --resize {trained_resize} "
                 f"(its run.json), not {args.resize}")
    if trained.get("data") is not None and args.data is None:  # the run's data, which fill_in_defaults takes
        if args.synthetic_patients is not None:
            sys.exit(f"train_mura.py: {args.evaluate} was trained on {trained['data']} (its run.json); "
                     "--synthetic-patients sizes the synthetic replica, which that data replaces")
        if not Path(trained["data"]).exists():
            sys.exit(f"train_mura.py: {args.evaluate} was trained on {trained['data']} (its run.json), which is "
                     "gone; give --data")
    fill_in_defaults(args, trained)
    log.info("Evaluating on %s", args.data or f"the synthetic replica of {args.synthetic_patients} patients, "
                                              f"seed {args.seed}")
    if "pixel_std" not in trained:  # no run.json, or one from before run.json kept them
        log.warning("No pixel statistics in %s: decoding the training images for them",
                    "its run.json" if trained else "a run.json")
        return None
    return trained["pixel_mean"], trained["pixel_std"]


def load_data(args, normalisation=None):
    """The dataset (``MURA``), synthesised first when no ``--data`` is given.

    With ``normalisation``, the ``(mean, std)`` a model was trained with, only
    the validation split (``MURASplit``): what ``--evaluate`` needs.
    """
    cache_dir = cache_folder(args)
    root = args.data
    if root is None:
        root = cache_dir / f"synthetic-mura-{args.synthetic_patients}-seed{args.seed}"
        log.info("No --data given: using a SYNTHETIC replica of MURA's layout in %s", root)
        mura.synthesize(root, train_patients=args.synthetic_patients,
                        valid_patients=max(args.synthetic_patients // 4, 10), seed=args.seed, progress=not args.quiet)
    options = dict(size=args.size, resize=args.resize, cache_dir=cache_dir, workers=args.workers,
                   progress=not args.quiet)
    if normalisation is None:
        data = mura.load_mura(root, **options)
        splits = (data.train, data.valid)
    else:
        data = mura.load_split(root, "valid", mean=normalisation[0], std=normalisation[1], **options)
        splits = (data,)
    log.info("%s", data)
    for split in splits:
        count = len(split.skipped_images)
        if count:
            log.warning("%d unreadable %s image%s left out%s", count, split.name,
                        " was" if count == 1 else "s were", " (listed in metrics.json)" if split.name == "valid" else "")
    return data


def build_model(args, input_shape):
    """A new network, or a trained base with a new head (``--init-from``), compiled.

    Raises ValueError naming ``--init-from`` when that model has no base to reuse, and ``--size``
    when the network cannot take ``input_shape``.
    """
    if args.init_from:
        base = donor_base(args.init_from)
        for layer in base:
            layer.trainable = not args.freeze_base
        layers = base + classifier_head(128, args.dropout)
        network = f"the convolutional base of --init-from {args.init_from}"
        log.info("Reusing the convolutional base of %s (%d layers, %s)", args.init_from, len(base),
                 "frozen" if args.freeze_base else "trainable")
    elif args.model == "vgg16":
        layers = ARCHITECTURES["vgg16"](dropout=args.dropout, width_divisor=args.vgg_width_divisor)
        network = "the vgg16 network"
    else:
        layers = ARCHITECTURES[args.model](dropout=args.dropout)
        network = f"the {args.model} network"
    try:  # every option but the size was checked: what fails here is the image's size
        model = minidl.Sequential(layers, input_shape=input_shape, seed=args.seed)
    except (ValueError, MemoryError) as error:  # too small for the network's poolings, or far too large
        raise ValueError(f"--size {args.size} does not fit {network}: {error}") from None
    model.compile(OPTIMIZERS[args.optimizer](args.lr), CrossEntropy())
    return model


def donor_base(path):
    """The layers of the model in ``path`` up to its ``Flatten``; ValueError naming ``--init-from`` if it has none."""
    try:
        donor = minidl.Sequential.load(path)
        base, _ = split_base(donor.layers)
    except (OSError, ValueError) as error:
        raise ValueError(f"--init-from {path}: {error}") from None
    if donor.input_shape is None:
        raise ValueError(f"--init-from {path}: the model was never built for an input size; it has not been trained")
    if len(donor.input_shape) != 3 or donor.input_shape[2] != 1:
        raise ValueError(f"--init-from {path}: the model takes inputs of shape {tuple(donor.input_shape)}, "
                         "not greyscale images (S, S, 1)")
    return base


def history_rows(history_csv):
    """``(header, rows, cut)`` of a ``history.csv``: its whole rows as lists of strings.

    A last row cut short (the run died while writing it) is left out, and
    ``cut`` says so. An empty cell is a value that epoch did not log
    (CSVLogger leaves it blank).
    """
    with open(history_csv, newline="") as f:
        text = f.read()
    header, *rows = list(csv.reader(io.StringIO(text))) or [[]]
    cut = bool(rows) and (len(rows[-1]) != len(header) or not text.endswith("\n"))
    return header, rows[:-1] if cut else rows, cut


def completed_epochs(history_csv):
    """The logs of the epochs recorded in ``history.csv``, oldest first (for ``--resume``).

    A last row cut short is dropped from the file too, so that the resumed
    run's rows follow whole ones.
    """
    header, rows, cut = history_rows(history_csv)
    if cut:
        log.warning("%s: its last row is incomplete (the run stopped while writing it); dropping it", history_csv)
        with atomic_path(history_csv) as tmp, open(tmp, "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([header, *rows])  # as CSVLogger writes it
    return [{key: float(value) for key, value in zip(header, row) if key != "epoch" and value != ""}
            for row in rows]


def loss_weights(data, mode):
    """One loss weight per training image for ``--class-weights`` (None for ``none``), logged."""
    if mode == "none":
        return None
    by_study_type = mode == "study-type"
    try:
        weights = data.class_weights(by_study_type=by_study_type)
    except ValueError as error:
        hint = " (--class-weights overall counts the classes over all study types)" if by_study_type else ""
        sys.exit(f"train_mura.py: --class-weights {mode}: {error}{hint}")
    for kind, pair in (weights.items() if by_study_type else [("all types", weights)]):
        log.info("Loss weights%s, %s: normal %.3f, abnormal %.3f", " (MURA paper)" if by_study_type else "",
                 kind, pair[0], pair[1])
    return data.image_weights(by_study_type=by_study_type)


def prepare_model(args, out):
    """``(model, past epochs' logs)``: the run's last.npz and history for ``--resume``, else a new model."""
    if args.resume:
        past_epochs = completed_epochs(out / "history.csv")
        log.info("Resuming %s after epoch %d", out / "last.npz", len(past_epochs))
        return minidl.Sequential.load(out / "last.npz"), past_epochs
    return build_model(args, (args.size, args.size, 1)), []


def remove_run_files(out):
    """Delete the files of the run in ``out`` (``--overwrite``): those a run writes, and nothing else.

    With them go the temporary files a killed write of one of them left (``atomic_path``'s names).
    """
    removed = [name for name in RUN_FILES if (out / name).exists()]
    for name in removed:
        (out / name).unlink()
    for name in RUN_FILES:
        for leftover in out.glob(f".{name}.*.tmp"):
            leftover.unlink()
    if removed:
        log.info("--overwrite: deleted the previous run's %s from %s", ", ".join(removed), out)


def train(args, data, out, model, past_epochs, sample_weight):
    """Train ``model`` (carrying on after ``past_epochs`` when resuming).

    Returns the best epoch's model, and whether any epoch was trained (a
    resumed run may have none left).
    """
    if not args.quiet:
        model.summary(print_fn=log.info)
    stopper = EarlyStopping(monitor="val_loss", patience=args.patience)
    monitors = [
        ModelCheckpoint(out / "model.npz", monitor="val_loss", save_best_only=True),
        ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=args.lr_patience, min_lr=1e-6, verbose=1),
        stopper,
    ]
    for monitor in monitors:  # a resumed run carries on with the best loss and the epochs waited so far
        monitor.catch_up(past_epochs)
    # last.npz is written after the learning rate is lowered, so that it holds the rate the
    # next epoch uses, and before history.csv, so that an interrupted write costs an epoch
    # trained twice rather than one skipped.
    callbacks = [
        *monitors,
        ModelCheckpoint(out / "last.npz", save_best_only=False),
        CSVLogger(out / "history.csv", append=args.resume),
    ]
    done = len(past_epochs)
    if done >= args.epochs:
        log.warning("The run in %s has already trained %d epochs (--epochs %d): nothing left to train",
                    out, done, args.epochs)
    train_batches = data.train.batches(args.batch_size, augment=args.augment, seed=args.seed,
                                       sample_weight=sample_weight)
    train_batches.epoch = done  # a resumed run draws the shuffles and augmentations it would have drawn
    start = time.perf_counter()
    history = model.fit(train_batches,
                        epochs=args.epochs, initial_epoch=done,
                        validation_data=data.valid.batches(args.batch_size),
                        callbacks=callbacks, verbose=2 if args.quiet else 1)
    if not history.epoch and done < args.epochs:  # EarlyStopping, caught up, stopped it before it began
        log.warning("Early stopping had ended the run in %s after epoch %d (no lower validation loss in its last "
                    "%s): nothing left to train; resume it with a larger --patience to train on",
                    out, done, epochs_text(stopper.wait))
    if stopper.stopped_epoch is not None:
        log.info("Early stopping after epoch %d: no lower validation loss in its last %s",
                 stopper.stopped_epoch + 1, epochs_text(stopper.wait))
    val_losses = [logs["val_loss"] for logs in past_epochs] + history.history.get("val_loss", [])
    best = best_epoch(val_losses)
    if best is not None:
        log.info("model.npz holds epoch %d, of the lowest validation loss (%.4f)", best + 1, val_losses[best])
    if history.epoch:
        log.info("Training took %.1f s", time.perf_counter() - start)
    return minidl.Sequential.load(out / "model.npz"), bool(history.epoch)


def best_epoch(val_losses):
    """The index of the epoch ``model.npz`` holds: the first of the lowest finite validation loss, as
    ModelCheckpoint keeps it; None when no loss is finite."""
    finite = [epoch for epoch, value in enumerate(val_losses) if math.isfinite(value)]
    return min(finite, key=val_losses.__getitem__) if finite else None


def epochs_text(count):
    return "epoch" if count == 1 else f"{count} epochs"


def evaluate(model, model_path, valid, out, batch_size, progress=False):
    """Study-level predictions on the ``valid`` split, metrics.json, predictions.csv and the plots.

    ``curves.png`` shows the model's training, from the ``history.csv`` beside
    ``model_path``. Returns the metrics, the report, the names of the files written
    and ``one_class_warning``'s warning (or None).

    The files of an earlier evaluation in ``out`` are deleted before any is
    written, and ``metrics.json`` is written last, so that an interrupted
    evaluation leaves no file beside results it does not match.
    """
    # Batches no larger than training's: a convolution's im2col matrix grows with the batch.
    image_probabilities = model.predict(valid.batches(batch_size), verbose=int(progress))[:, 1]
    study_ids, study_probabilities = metrics.aggregate_by_study(valid.study_ids, image_probabilities)
    studies, labels, types = valid.studies[study_ids], valid.study_labels[study_ids], valid.study_types[study_ids]
    with warnings.catch_warnings():
        # A study type whose validation studies are all of one class has no AUC, and no
        # sensitivity or no specificity; the report shows nan there, said once below.
        warnings.simplefilter("ignore", metrics.UndefinedMetricWarning)
        report = metrics.study_report(types, labels, study_probabilities, threshold=THRESHOLD)
    undefined = sorted({name for row in [report["overall"], *report["per_study_type"].values()]
                        for name, value in row.items() if isinstance(value, float) and math.isnan(value)})
    if undefined:
        log.info(f"Some figures are nan ({', '.join(undefined)}): undefined for a study type whose "
                 "validation studies are of one class (kappa: whose predictions are too)")
    earlier = [name for name in reversed(RESULT_FILES) if (out / name).exists()]  # metrics.json first
    for name in earlier:
        (out / name).unlink()
    if earlier:
        log.info("Replacing the results of an earlier evaluation in %s (%s)", out, ", ".join(earlier))
    result = {
        "model": str(Path(model_path).resolve()),
        "split": "valid",
        "synthetic": valid.synthetic,
        "images": int(len(valid)),
        "studies": int(len(studies)),
        "skipped_images": valid.skipped_images,
        "overall": report["overall"],
        "per_study_type": report["per_study_type"],
    }
    with atomic_path(out / "predictions.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["study", "study_type", "label", "probability"])
        for row in zip(studies, types, labels, study_probabilities):
            writer.writerow([row[0], row[1], int(row[2]), repr(float(row[3]))])
    written = ["predictions.csv"]
    if len(np.unique(labels)) == 2:
        title = plot_title(f"ROC curve of {len(studies)} validation studies, study level", valid.synthetic)
        plots.plot_roc(labels, study_probabilities, out / "roc.png", title=title, threshold=THRESHOLD)
        written.append("roc.png")
    else:
        log.warning("No roc.png: the validation studies are all of one class, so there is no ROC curve")
    predictions = metrics.predict_abnormal(study_probabilities, THRESHOLD)
    plots.plot_confusion_matrix(
        metrics.confusion_matrix(labels, predictions, num_classes=2), out / "confusion.png",
        title=plot_title(f"{len(studies)} validation studies, study level:\n"
                         f"abnormal if mean probability > {THRESHOLD}", valid.synthetic))
    written.append("confusion.png")
    history_csv = Path(model_path).parent / "history.csv"
    if history_csv.exists():
        history = read_history(history_csv)
        plots.plot_history(history, out / "curves.png", title=curves_title(model_path, valid.synthetic),
                           level="image", best_epoch=kept_epoch(model_path, history))
        written.append("curves.png")
    with atomic_path(out / "metrics.json") as tmp, open(tmp, "w") as f:
        json.dump(_nan_to_null(result), f, indent=2, allow_nan=False)
    written.append("metrics.json")
    return result, report, written, one_class_warning(predictions, labels)


def kept_epoch(model_path, history):
    """The epoch (from 1) whose weights ``model_path`` holds: for a run's ``model.npz`` the best, for its
    ``last.npz`` the last; None for another file, or when no validation loss is finite."""
    name = Path(model_path).name
    if name == "last.npz":
        return len(history.get("loss", [])) or None
    best = best_epoch(history.get("val_loss", [])) if name == "model.npz" else None
    return None if best is None else best + 1


def plot_title(what, synthetic):
    """A plot's title: what data it shows, and on the replica that it is synthetic (plots travel without the log)."""
    return f"{what}\nSYNTHETIC data, not X-rays" if synthetic else what


def curves_title(model_path, evaluated_synthetic):
    """The title of ``curves.png``: the images it shows, and a warning when the training loss was class-weighted.

    Its weights are below 1, so the training loss runs at about half the scale of
    ``val_loss``, which is not weighted: the gap looks like overfitting but is not.
    The curves are of the run that trained the model, on that run's data (which
    ``--evaluate --data`` may replace for the other files): whether it was the
    replica is its ``run.json``'s to say, else the evaluated data's
    (``evaluated_synthetic``).
    """
    settings = run_settings(Path(model_path).parent)
    synthetic = evaluated_synthetic if settings is None else settings.get("data") is None
    title = plot_title("Loss and accuracy per epoch of the training run, on its training and validation images",
                       synthetic)
    settings = settings or {}
    if settings.get("class_weights", "none") == "none":
        return title
    return title + "\nThe training loss is class-weighted (about half its plain scale), the validation loss is not"


def _nan_to_null(value):
    """Undefined figures (nan) as JSON null: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _nan_to_null(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def read_history(path):
    """``history.csv`` as ``{key: one value per epoch}`` for ``plots.plot_history`` (nan where not logged)."""
    header, rows, _ = history_rows(path)
    if not rows:
        return {}
    return {key: [float(row[i] or "nan") for row in rows] for i, key in enumerate(header) if key != "epoch"}


def print_report(report, synthetic, learned=True):
    """Print the report's table, a note under it for intervals of zero width, and the paper's kappas.

    ``learned``: False when the model predicts one class for every study, whose
    results say nothing of the pipeline either (``one_class_warning`` says why).
    """
    print()
    print(metrics.format_report(report))
    rows = [*report["per_study_type"].items(), ("overall", report["overall"])]
    flat = [name for name, row in rows if row["kappa_low"] == row["kappa_high"]]
    if flat:
        print(textwrap.fill(f"The kappa interval of {', '.join(flat)} has zero width: Cohen's large-sample standard "
                            "error is 0 where every study in the group agrees with its label (or none does), so that "
                            "interval says nothing about the uncertainty of so small a group.", width=100))
    print("\nThe MURA paper's model, kappa on its test set (DenseNet-169, 320 px), for reference:")
    print("  " + ", ".join(f"{k.removeprefix('XR_').lower()} {v:.3f}" for k, v in PAPER_KAPPA.items()))
    if synthetic:
        print("These results are on SYNTHETIC data: "
              + ("they show the pipeline works, not how well it reads X-rays." if learned else "not X-rays."))


def one_class_warning(predictions, labels):
    """The warning that ends the run when every study gets the same prediction at ``THRESHOLD``, else None.

    None too when the ``labels`` are of one class: one prediction for all may then be right.
    """
    classes = np.unique(predictions)
    if len(classes) != 1 or len(np.unique(labels)) != 2:
        return None
    return (f"Warning: the model predicts {('normal', 'abnormal')[classes[0]]} for every validation study, so it has "
            f"learned nothing the {THRESHOLD} threshold can use: train it again with a lower --lr or more --epochs")


def evaluate_command(args, model_path):
    """The command that evaluates ``model_path`` as this run does: with ``--evaluate``, the one typed."""
    if args.evaluate:
        return command(args.argv)
    arguments = ["--evaluate", str(model_path)]
    for flag, value in (("--data", args.data), ("--cache-dir", args.cache_dir), ("--workers", args.workers)):
        if value is not None:
            arguments += [flag, str(value)]
    if args.device != "numpy":
        arguments += ["--device", args.device]
    return command(arguments + (["--quiet"] if args.quiet else []))


def show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as one line of the log (Python's default adds the file, the line number and its code)."""
    log.warning("Warning: %s", message)


def main(argv=None):
    args = parse_args(argv)
    if importlib.util.find_spec("matplotlib") is None:  # found out now, not after hours of training
        sys.exit("train_mura.py draws its plots with matplotlib, which is not installed: "
                 "pip install -e '.[plot]' (or pip install matplotlib)")
    # This script's messages from INFO up; other libraries' (matplotlib's font cache, say) from WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    log.setLevel(logging.INFO)
    try:
        set_backend(args.device)
    except RuntimeError as error:
        sys.exit(f"train_mura.py: --device {args.device}: {error} (or run with --device numpy)")
    log.info("minidl %s; backend: %s", minidl.__version__, device_name())
    out = Path(args.out)
    written = []
    try:  # the model and the data first, and a bad file, folder or size said in one line
        if args.evaluate:
            model_path = Path(args.evaluate)
            model = minidl.Sequential.load(model_path)
            normalisation = evaluation_settings(args, model)  # before the minutes of decoding images
            data = load_data(args, normalisation)
            valid = data.valid if normalisation is None else data
        else:
            model_path = out / "model.npz"
            if args.resume:
                check_resumed_settings(args, out)
            model, past_epochs = prepare_model(args, out)
            data = load_data(args)
            valid = data.valid
            sample_weight = loss_weights(data, args.class_weights)  # may refuse the data: before any file goes
            if args.overwrite:
                remove_run_files(out)
            write_run_settings(args, out, data)
            written.append("run.json")
    except (OSError, ValueError) as error:
        sys.exit(f"train_mura.py: {error}")
    except KeyboardInterrupt:  # while the images were decoded: the run has written nothing yet
        sys.exit("train_mura.py: interrupted while preparing the model and the data; no file of the run was written")
    out.mkdir(parents=True, exist_ok=True)
    if not args.evaluate:
        try:
            model, trained = train(args, data, out, model, past_epochs, sample_weight)
        except KeyboardInterrupt:
            if (out / "last.npz").exists():
                sys.exit(f"train_mura.py: interrupted; the finished epochs are in {out}: continue with "
                         + command_line(args.argv, add="--resume", drop="--overwrite"))
            sys.exit("train_mura.py: interrupted before an epoch had finished: start again with "
                     + command_line(args.argv, add="--overwrite", drop="--resume"))
        except FloatingPointError as error:  # the same rate would diverge again: a new run, at a lower one
            sys.exit(f"train_mura.py: {error}. Start again with a lower --lr, replacing this run: "
                     + command_line(args.argv, add="--overwrite", drop="--resume"))
        if trained:
            written += ["model.npz", "last.npz", "history.csv"]
    try:
        result, report, evaluated, warning = evaluate(model, model_path, valid, out, args.batch_size,
                                                      progress=not args.quiet)
    except KeyboardInterrupt:
        sys.exit(f"train_mura.py: interrupted while evaluating {model_path}; evaluate it with "
                 + evaluate_command(args, model_path))
    print_report(report, valid.synthetic, learned=warning is None)
    log.info("Wrote into %s: %s", out, ", ".join(written + evaluated))
    if warning is not None:  # last, where it is read
        log.warning(warning)
    return result


if __name__ == "__main__":
    warnings.showwarning = show_warning
    main()
