"""MURA: the musculoskeletal radiographs dataset, from the files on disk to training batches.

MURA v1.1 (Rajpurkar et al., 2017) makes public 40,005 X-ray images of upper
extremities (36,808 train, 3,197 valid; its test set is hidden), grouped in studies; each study is labelled normal (0) or
abnormal (1) by a radiologist. On disk::

    MURA-v1.1/
        train_image_paths.csv      MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image1.png
        train_labeled_studies.csv  MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/,1
        valid_image_paths.csv      (the same for valid)
        valid_labeled_studies.csv
        train/XR_<TYPE>/patientNNNNN/studyK_positive|negative/imageJ.png
        valid/...

The CSV files have no header row, and they, not the folders, say what the
dataset contains: copies made on a Mac carry ``._image1.png`` and
``.DS_Store`` files that are not images of the dataset.

The road from files to batches:

1. ``find_root`` finds the ``MURA-v1.1`` folder, ``read_index`` reads a split's
   two CSV files into one ``ImageRecord`` per image.
2. ``load_image`` decodes one image (any PNG mode, 8 or 16 bits) into an
   S x S uint8 greyscale array.
3. ``load_mura`` decodes every image of a split once into a cache file
   (see "The cache" below) and returns a ``MURA`` object whose ``train`` and
   ``valid`` splits (``MURASplit``) hand out the images, the labels, the
   studies, and batches for ``Sequential.fit``.

``synthesize`` writes a small synthetic replica with the same layout, for
trying everything out without the real dataset.

Image preprocessing
-------------------
Every image becomes S x S greyscale uint8:

* colour images become grey (ITU-R 601 luma: X-rays stored as RGB are grey
  anyway); transparency is ignored; 16-bit greyscale images (Pillow's
  ``I;16`` modes) keep their full depth until the contrast stretch below.
  Pillow opens 16-bit RGB and 16-bit grey-with-alpha PNGs as 8-bit RGB/RGBA,
  so those lose their low byte;
* the image is resized so that it fits S x S. ``resize="pad"`` (the default)
  keeps the aspect ratio and fills the rest of the square with black;
  ``resize="squash"`` stretches it to the square. Pad is the default because
  MURA images range from tall and narrow (forearm) to wide (hand), and
  squashing would distort the angles and widths of bones that a diagnosis
  rests on, differently in every image; rotation augmentation would then turn
  that distortion into shears no real X-ray shows. Squash gives the bone more
  pixels; it is what the MURA paper did (320 x 320);
* its contrast is stretched so that its darkest pixel is 0 and its brightest
  255 (per image: MURA's exposures and bit depths vary from image to image).

Black (0) is the background: of an X-ray, of the padding, and of the corners
that rotation augmentation brings in. The network sees
``(pixel - mean) / std``, with the mean and standard deviation of all the
training pixels.

The cache
---------
Decoding 40,005 PNG files takes minutes, so each split is decoded once per
image size and resize mode into ``<cache_dir>/mura-<root id>-<split>-<S>px-<resize>.npy``
(uint8, N x S x S, about 2 GB for all of MURA at 224 px, opened memory-mapped so
it is never read into memory at once) with ``.json`` beside it: the key, the
image paths in row order, the unreadable images left out, and the pixel
mean and standard deviation. uint8 is enough: after the contrast stretch
an image has 256 grey levels, more than a network at these sizes can tell
apart, and float32 would take four times the space.

The key is a SHA-256 over the format version, the split, the size, the resize
mode, the bytes of the split's two CSV files, and every image's path, byte size
and modification time; when any of them changes, the cache is rebuilt. Both
files are written to temporary files and renamed into place, the ``.json``
last: the ``.json`` is what marks a cache as complete, so an interrupted build
never leaves a cache that looks valid. The disk space is reserved before the
first image is decoded, so a full disk is an error at the start, not a crash
partway. Processes that need the same cache build it once: the first holds a
lock (``<stem>.lock`` beside it, on systems with ``fcntl``) and the others
wait for it, then read what it built.

A file that cannot be decoded (corrupt, truncated, not an image) is left out
and listed in the ``.json``. A file that cannot be *read* (permission denied,
an I/O error, a disk unmounted while caching) is an error that stops the
build: caching it as unreadable would leave it out for good.
"""
import csv
import errno
import functools
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..backend import default_rng, get_array_module, to_numpy
from ..data import ArrayBatches, random_flip_rotate
from ..utils import atomic_path, check_flag, finite_float, is_int, positive_int, seed_or_none, stacklevel_outside

try:
    import fcntl
except ImportError:  # Windows: concurrent builds of one cache are not coordinated there
    fcntl = None

_FOLDER = "MURA-v1.1"
SPLITS = ("train", "valid")
STUDY_TYPES = ("XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST")
RESIZE_MODES = ("pad", "squash")
_CACHE_FORMAT_VERSION = 1
_MAX_ROTATION_DEGREES = 30.0  # the MURA paper's augmentation
_SYNTHETIC_MARK = "SYNTHETIC"
# The longest side synthesize draws: a square of it stays below Pillow's decompression-bomb limit
# (Image.MAX_IMAGE_PIXELS, 89 million pixels), so that load_image decodes every image of a replica.
_MAX_SYNTHETIC_SIZE = 8192

# Modes whose pixels have more than 8 bits; Pillow's convert("L") would clip them.
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# What Pillow raises for a file it cannot decode (truncated, corrupt, not an image, or
# so large that it refuses to: MURA's long sides are at most 512 px).
_UNREADABLE_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class UnreadableImageWarning(UserWarning):
    """An image of the dataset could not be decoded and was left out."""


@dataclass(frozen=True)
class ImageRecord:
    """One image of MURA, as the CSV files describe it.

    ``study`` and ``path`` are as the CSV files give them, relative to the
    folder above ``MURA-v1.1``: ``study`` ends with ``/``
    (``MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/``) and ``path``
    is that plus ``imageJ.png``. ``label``: 1 abnormal, 0 normal.
    """

    split: str
    study_type: str
    patient: str
    study: str
    path: str
    label: int


# ----------------------------------------------------------------- arguments
def _folder(owner, name, path):
    """``path`` (a ``str`` or ``os.PathLike``) as a ``Path``, else a ``TypeError`` naming ``owner`` and ``name``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{owner}: {name} must be a folder path (str or os.PathLike), got {path!r}")
    return Path(path)


def _one_of(owner, name, value, choices):
    """``value`` if it is one of the strings ``choices``, else a ``ValueError`` (an array too, not a bare error)."""
    if not (isinstance(value, str) and value in choices):
        raise ValueError(f"{owner}: {name} must be one of {choices}, got {value!r}")
    return value


# ----------------------------------------------------------------- the index
def find_root(path):
    """The ``MURA-v1.1`` folder at or below ``path``, as a ``Path``.

    ``path`` may be the folder itself, its parent, or the parent of a doubled
    ``MURA-v1.1/MURA-v1.1`` that some downloads unpack into. The folder is
    recognised by its ``train_labeled_studies.csv``; ``FileNotFoundError``
    lists the places looked at when none has it; ``TypeError`` for a
    ``path`` that is not a ``str`` or ``os.PathLike``.
    """
    path = _folder("find_root", "path", path)
    candidates = [path, path / _FOLDER, path / _FOLDER / _FOLDER]
    for candidate in candidates:
        if (candidate / "train_labeled_studies.csv").is_file():
            return candidate
    looked = ", ".join(str(c / "train_labeled_studies.csv") for c in candidates)
    raise FileNotFoundError(f"MURA: train_labeled_studies.csv not found; looked for {looked}")


def _image_file(root, csv_path):
    """The file of an image or study whose CSV path is ``csv_path`` (``MURA-v1.1/...``).

    The CSV paths start with the folder's own name, so they are resolved
    against ``root`` itself; that works even when the folder was renamed.
    """
    return root.joinpath(*csv_path.rstrip("/").split("/")[1:])


def _csv_rows(file):
    """``(line number, row)`` for each row of a header-less CSV file, skipping lines of only whitespace.

    A first row that reads as a header (its first field is no path) is a
    ``ValueError`` saying so: MURA's CSV files have none, but some copies of
    them in circulation add one (``Img_Path,Label``), which the layout checks
    would report less plainly.
    """
    if not file.is_file():
        raise FileNotFoundError(f"MURA: {file} not found")
    data = file.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # -sig drops a byte-order mark, which would stick to the first path
    except UnicodeDecodeError as error:
        before = error.object[: error.start]  # the bytes after any byte-order mark
        line = before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1  # as csv counts lines
        raise ValueError(f"MURA: {file}, line {line}: not UTF-8 text ({error.reason}); MURA's CSV files "
                         "are ASCII") from None
    first = True
    for line, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        row = [field.strip() for field in row]
        if not (any(row) or len(row) > 1):  # a line of spaces is blank too; ',' is a row of two empty fields
            continue
        if first and row[0] and "/" not in row[0]:
            raise ValueError(f"MURA: {file}, line {line}: {row!r} looks like a header row, which MURA's CSV files "
                             "do not have (every line is data); if it is one, delete it")
        first = False
        yield line, row


def _parse_path(text, split, parts_expected, where):
    """The folders of a CSV path, checked against the MURA layout; errors name ``where``."""
    parts = text.rstrip("/").split("/")
    layout = f"{_FOLDER}/{split}/XR_<TYPE>/patientNNNNN/studyK_positive|negative/" + (
        "imageJ.png" if parts_expected == 6 else "")
    if len(parts) != parts_expected or parts[0] != _FOLDER or parts[1] != split or not parts[2].startswith("XR_"):
        raise ValueError(f"MURA: {where}: {text!r} does not follow the layout {layout}")
    return parts


def _label_from_folder(study_folder, where):
    if study_folder.endswith("_positive"):
        return 1
    if study_folder.endswith("_negative"):
        return 0
    raise ValueError(f"MURA: {where}: study folder {study_folder!r} ends neither in _positive nor in _negative")


def read_index(root, split):
    """The images of one split (``"train"`` or ``"valid"``) as a list of ``ImageRecord``.

    Reads ``<split>_labeled_studies.csv`` and ``<split>_image_paths.csv``
    (no header rows: every line is data), in the order of the image CSV.
    Raises, naming the file (and the line, where one is at fault):
    ``FileNotFoundError`` for a missing CSV or image file; ``ValueError`` for
    an empty split, a path outside the layout, a label other than 0/1, a
    label that contradicts the study folder's ``_positive`` / ``_negative``
    suffix, a study listed twice or without images, or an image whose study
    is not listed.
    """
    _one_of("read_index", "split", split, SPLITS)
    root = find_root(_folder("read_index", "root", root))
    studies_csv = root / f"{split}_labeled_studies.csv"
    images_csv = root / f"{split}_image_paths.csv"

    study_labels = {}  # study path without its trailing "/" -> (study path as given, label)
    for line, row in _csv_rows(studies_csv):
        where = f"{studies_csv}, line {line}"
        if len(row) != 2 or row[1] not in ("0", "1"):
            raise ValueError(f"MURA: {where}: expected 'study folder path/,label' with label 0 or 1, got {row!r}")
        study, label = row[0], int(row[1])
        parts = _parse_path(study, split, 5, where)
        if _label_from_folder(parts[4], where) != label:
            raise ValueError(f"MURA: {where}: label {label} contradicts the study folder name {parts[4]!r}")
        key = study.rstrip("/")
        if key in study_labels:
            raise ValueError(f"MURA: {where}: study {study!r} is listed twice")
        study_labels[key] = (study, label)

    records = []
    studies_with_images = set()
    first_line = {}  # image path -> the line that listed it
    for line, row in _csv_rows(images_csv):
        where = f"{images_csv}, line {line}"
        if len(row) != 1:
            raise ValueError(f"MURA: {where}: expected one image path, got {row!r}")
        path = row[0]
        if path in first_line:
            raise ValueError(f"MURA: {where}: image {path!r} is listed twice (first on line {first_line[path]})")
        first_line[path] = line
        parts = _parse_path(path, split, 6, where)
        study_key = "/".join(parts[:5])
        if study_key not in study_labels:
            raise ValueError(f"MURA: {where}: the study of {path!r} is not listed in {studies_csv}")
        file = _image_file(root, path)
        if not file.is_file():
            raise FileNotFoundError(f"MURA: image {file} not found (listed in {where})")
        study, label = study_labels[study_key]
        records.append(ImageRecord(split, parts[2], parts[3], study, path, label))
        studies_with_images.add(study_key)

    if not records:
        raise ValueError(f"MURA: {images_csv} lists no images")
    empty = [study for key, (study, _) in study_labels.items() if key not in studies_with_images]
    if empty:
        raise ValueError(f"MURA: {len(empty)} stud{'y' if len(empty) == 1 else 'ies'} of {studies_csv} "
                         f"ha{'s' if len(empty) == 1 else 've'} no image in {images_csv}, e.g. {empty[0]!r}")
    return records


# ----------------------------------------------------------------- one image
def _greyscale(image):
    """The pixels of a Pillow image as float32 (H, W) grey levels, at full bit depth."""
    if image.mode in _HIGH_DEPTH_MODES:
        return np.asarray(image, dtype=np.float32)
    return np.asarray(image.convert("L"), dtype=np.float32)


def load_image(file, size, resize="pad"):
    """Decode an image file into a (size, size) uint8 greyscale array.

    Any Pillow mode (L, LA, RGB, RGBA, P, 16-bit I;16, I, F; 16-bit colour
    PNGs arrive as 8-bit RGB from Pillow). ``resize``:
    ``"pad"`` keeps the aspect ratio and centres the image on black,
    ``"squash"`` stretches it to the square. The contrast is then stretched
    to 0..255 (see the module's docstring). Pillow's errors for unreadable
    files propagate (``OSError`` and others). ``size`` must be a positive
    int and ``resize`` one of ``RESIZE_MODES``, else a ``ValueError``.
    """
    size = positive_int("load_image", "size", size)
    _one_of("load_image", "resize", resize, RESIZE_MODES)
    with Image.open(file) as image:
        grey = _greyscale(image)
    height, width = grey.shape
    if resize == "squash":
        new_height, new_width = size, size
    else:
        scale = size / max(height, width)
        new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    # Pillow's bilinear filter widens with the reduction, so shrinking averages, not skips, pixels.
    small = np.asarray(Image.fromarray(grey).resize((new_width, new_height), Image.Resampling.BILINEAR))
    low, high = float(small.min()), float(small.max())
    stretched = (small - low) * (255.0 / (high - low)) if high > low else np.zeros_like(small)
    square = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - new_height) // 2, (size - new_width) // 2
    square[top : top + new_height, left : left + new_width] = np.clip(np.rint(stretched), 0, 255)
    return square


def _decode_or_error(file, size, resize):
    """``(image, None)``, or ``(None, reason)`` for a file that cannot be decoded.

    The file is read first, then decoded from memory: an error while reading
    (permission denied, an I/O error, a file gone) is the file system's, may
    not recur on the next try, and is raised; an error while decoding is the
    image's.
    """
    try:
        data = Path(file).read_bytes()
    except OSError as error:
        raise type(error)(error.errno, f"MURA: cannot read {file} ({error.strerror}); nothing was cached") from error
    buffer = io.BytesIO(data)
    try:
        return load_image(buffer, size, resize), None
    except _UNREADABLE_IMAGE_ERRORS as error:
        # Pillow's messages name what it was given, here the buffer: name the file instead.
        return None, f"{type(error).__name__}: {error}".replace(repr(buffer), repr(str(file)))


@contextmanager
def _mapper(workers):
    """An ordered ``map`` that runs in ``workers`` processes (the built-in ``map`` for one).

    A worker that dies (killed for memory, say) makes the map raise
    ``BrokenProcessPool`` rather than wait for its lost images. On an error
    or an interrupt (Ctrl-C, a notebook's "interrupt kernel") the workers are
    terminated, not waited for: a worker blocked writing results that nobody
    reads any more would never finish.
    """
    if workers == 1:
        yield map
        return
    pool = ProcessPoolExecutor(workers, initializer=_exit_with_parent)
    try:
        yield functools.partial(pool.map, chunksize=16)
    except BaseException:
        _terminate_workers(pool)
        raise
    finally:
        pool.shutdown(cancel_futures=True)


def _exit_with_parent():
    """Start a thread in a worker that ends it once its parent is gone.

    A parent killed outright (``kill -9``, the out-of-memory killer) cannot
    stop its workers, and they would wait for work forever.
    """
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _terminate_workers(pool):
    """Stop the processes of a ``ProcessPoolExecutor`` at once (Python 3.14 has ``terminate_workers``)."""
    if hasattr(pool, "terminate_workers"):
        pool.terminate_workers()
        return
    for process in list((pool._processes or {}).values()):  # noqa: SLF001 - no public way before 3.14
        process.terminate()


# ----------------------------------------------------------------- the cache
def default_cache_dir():
    """``$XDG_CACHE_HOME/minidl/mura``, or ``~/.cache/minidl/mura``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minidl" / "mura"


def _cache_files(cache_dir, root, split, size, resize):
    """The ``.npy``, ``.json`` and ``.lock`` paths of one cache; datasets at different places never share them."""
    root_id = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    stem = f"mura-{root_id}-{split}-{size}px-{resize}"
    return cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json", cache_dir / f"{stem}.lock"


def _cache_key(root, split, records, size, resize):
    """SHA-256 over everything a cache depends on (see the module's docstring)."""
    digest = hashlib.sha256()
    settings = {"format_version": _CACHE_FORMAT_VERSION, "split": split, "size": size, "resize": resize}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name in (f"{split}_labeled_studies.csv", f"{split}_image_paths.csv"):
        digest.update((root / name).read_bytes())
    for record in records:
        stat = _image_file(root, record.path).stat()
        digest.update(f"{record.path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_cache(npy_file, json_file, key):
    """``(images memmap, index dict)`` of a complete cache with this key, else None.

    The ``.npy`` has a row for every listed image; the first ``shape[0]`` of
    them hold the readable ones (rows left over by unreadable images are unused).
    """
    try:
        index = json.loads(json_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("format_version") != _CACHE_FORMAT_VERSION or index.get("key") != key:
        return None
    try:
        images = _open_images(npy_file)
    except (FileNotFoundError, ValueError):
        return None
    shape = index.get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and images.ndim == 3):
        return None
    rows, *image_shape = shape
    if images.dtype != np.uint8 or list(images.shape[1:]) != image_shape or images.shape[0] < rows:
        return None
    return images[:rows], index


def _open_images(npy_file):
    """The cache's ``.npy`` as a read-only memmap; ``ValueError`` for a file that is not one.

    Not ``np.load``: it would also open a zip archive, and raises ``EOFError`` on an empty file.
    """
    return np.lib.format.open_memmap(npy_file, mode="r")


def _reserve_disk_space(file, split):
    """Allocate the disk blocks of the new, sparse ``file`` now; ``OSError`` naming the sizes when they do not fit.

    A memory-mapped file fills as images are decoded, and a write into it
    that finds the disk full kills the process (``SIGBUS``) rather than
    raising. Where the system cannot allocate ahead (macOS, some network
    file systems), the free space is checked instead, which another process
    may still take.
    """
    nbytes, disk_full = os.path.getsize(file), False
    if hasattr(os, "posix_fallocate"):
        try:
            with open(file, "r+b") as f:
                os.posix_fallocate(f.fileno(), 0, nbytes)
            return
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            disk_full = error.errno == errno.ENOSPC
    free = shutil.disk_usage(file.parent).free
    if disk_full or nbytes > free:
        raise OSError(errno.ENOSPC, f"MURA: the {split} cache needs {_size_text(nbytes)} but {file.parent} has "
                                    f"{_size_text(free)} free; choose a smaller size or another cache_dir")


def _size_text(nbytes):
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


@contextmanager
def _build_lock(lock_file, what, progress):
    """Hold an exclusive lock on ``lock_file`` while building ``what``, saying so when it must wait; yields whether it
    holds one.

    None without ``fcntl`` (Windows), and none, with a warning, on a file
    system that cannot lock (some network and cluster file systems).
    """
    if fcntl is None:
        yield False
        return
    try:
        descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)  # NFS locks only files open for writing
    except PermissionError:  # a lock file another user made in a shared cache_dir: locally, reading will do
        descriptor = os.open(lock_file, os.O_RDONLY)
    try:
        locked = True
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                tqdm.write(f"MURA: waiting for another process that is building {what}")
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError as error:
            locked = False
            warnings.warn(f"MURA: cannot lock {lock_file} ({error.strerror}); building {what} without the "
                          "lock, so another run must not build it at the same time",
                          stacklevel=stacklevel_outside(__name__))
        yield locked
    finally:
        os.close(descriptor)  # which releases the lock


def _build_cache(npy_file, json_file, root, split, records, size, resize, key, workers, progress, locked):
    """Decode every image of ``records`` into the cache files; returns the index dict.

    ``locked``: whether this process holds the cache's lock, so that no other
    is writing these files and temporary files left beside them are a killed build's.
    """
    for stale in npy_file.parent.glob(f".{npy_file.stem}.*.tmp"):  # atomic_path's names for the .npy and .json
        if locked:  # left by a killed build
            stale.unlink(missing_ok=True)
        else:
            warnings.warn(f"MURA: {stale} was left by a build of this cache that was killed (unless another "
                          "process is building it now); delete it to free the space",
                          stacklevel=stacklevel_outside(__name__))
    json_file.unlink(missing_ok=True)  # from here until the end, no cache looks valid
    npy_file.unlink(missing_ok=True)  # stale: its room is needed for the new one
    files = [_image_file(root, record.path) for record in records]
    kept, skipped = [], []
    pixel_sum = pixel_square_sum = 0
    decode = functools.partial(_decode_or_error, size=size, resize=resize)
    with atomic_path(npy_file) as tmp:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(records), size, size))
        _reserve_disk_space(Path(tmp), split)
        with _mapper(workers) as map_:
            # The bar wraps the whole zip: inside it, the bar would be asked for no item after the
            # last, and so would never count it.
            decoded = zip(records, files, map_(decode, files))
            for record, file, (image, error) in tqdm(decoded, total=len(files), unit="image",
                                                     desc=f"Caching MURA {split} at {size} px", disable=not progress):
                if error is not None:
                    warnings.warn(f"MURA: left out unreadable image {file} ({error})", UnreadableImageWarning,
                                  stacklevel=stacklevel_outside(__name__))
                    skipped.append({"path": record.path, "error": error})
                    continue
                images[len(kept)] = image
                kept.append(record.path)
                flat = image.ravel().astype(np.int64)
                pixel_sum += int(flat.sum())
                pixel_square_sum += int(flat @ flat)
        images.flush()
        del images  # unmapped before the rename: Windows cannot replace a mapped file
        if not kept:
            raise ValueError(f"MURA: none of the {len(records)} {split} images could be decoded")
    pixels = len(kept) * size * size
    mean = pixel_sum / pixels
    index = {
        "format_version": _CACHE_FORMAT_VERSION, "key": key, "split": split, "size": size, "resize": resize,
        "dtype": "uint8", "shape": [len(kept), size, size],
        "pixel_mean": mean, "pixel_std": math.sqrt(max(pixel_square_sum / pixels - mean**2, 0.0)),
        "images": kept, "skipped_images": skipped,
    }
    with atomic_path(json_file) as tmp:
        Path(tmp).write_text(json.dumps(index))
    return index


def _cached_split(root, split, size, resize, cache_dir, workers, progress):
    """``(images memmap, kept records, cache index)`` of a split, building the cache if needed."""
    records = read_index(root, split)
    key = _cache_key(root, split, records, size, resize)
    npy_file, json_file, lock_file = _cache_files(cache_dir, root, split, size, resize)
    cached = _read_cache(npy_file, json_file, key)  # without the lock, so that a read-only cache_dir serves
    built = False
    if cached is None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(cache_dir, os.W_OK):  # a read-only disk too
            raise PermissionError(f"MURA: the {split} cache must be built, but {cache_dir} cannot be written "
                                  "to; choose another cache_dir")
        with _build_lock(lock_file, f"the cache {lock_file.stem}", progress) as locked:
            cached = _read_cache(npy_file, json_file, key)  # another process may have built it meanwhile
            if cached is None:
                index = _build_cache(npy_file, json_file, root, split, records, size, resize, key, workers,
                                     progress, locked)
                cached, built = (_open_images(npy_file)[: len(index["images"])], index), True
    images, index = cached
    for skip in [] if built else index["skipped_images"]:  # a build warned of each as it found it
        warnings.warn(f"MURA: left out unreadable image {_image_file(root, skip['path'])} ({skip['error']}; "
                      f"found when the cache {json_file} was built)", UnreadableImageWarning,
                      stacklevel=stacklevel_outside(__name__))
    return images, _kept_records(records, index, split), index


def _kept_records(records, index, split):
    """The records of the images a cache holds, in its row order; warns of each study left without one."""
    by_path = {record.path: record for record in records}
    kept = [by_path[path] for path in index["images"]]
    lost = sorted({record.study for record in records} - {record.study for record in kept})
    for study in lost:
        warnings.warn(f"MURA: study {study} has no readable image: it is left out of the {split} split",
                      UnreadableImageWarning, stacklevel=stacklevel_outside(__name__))
    return kept


# ------------------------------------------------------------------ the data
def class_weights(labels):
    """The MURA paper's class weights for binary labels (1 abnormal), as ``{0: w_normal, 1: w_abnormal}``.

    With ``A`` abnormal and ``N`` normal labels, ``w_abnormal = N / (A + N)``
    and ``w_normal = A / (A + N)``: each class then weighs the same in the
    loss in total. ``ValueError`` when a class is absent.
    """
    labels = to_numpy(labels)
    abnormal, normal = int(np.sum(labels == 1)), int(np.sum(labels == 0))
    if abnormal + normal != labels.size:
        raise ValueError(f"class_weights: labels must be 0 or 1, got {np.unique(labels).tolist()}")
    if abnormal == 0 or normal == 0:
        raise ValueError(f"class_weights: need both classes, got {abnormal} abnormal and {normal} normal labels")
    total = abnormal + normal
    return {0: abnormal / total, 1: normal / total}


class MURASplit:
    """The images of one split (``train`` or ``valid``), decoded and cached.

    Per image (N of them, in the order of the image CSV, unreadable ones left out):

    * ``images``: (N, S, S) uint8 memory-mapped array, read-only;
    * ``labels``: (N,) int64, 1 abnormal, 0 normal (the label of its study);
    * ``study_ids``: (N,) int64, the index of its study in ``studies``;
    * ``records``: list of N ``ImageRecord``.

    Per study (M of them, in order of first appearance):

    * ``studies``: (M,) str, the study folder path as the CSV gives it;
    * ``study_labels``: (M,) int64; ``study_types``: (M,) str, e.g. ``"XR_WRIST"``.

    And ``skipped_images`` (CSV paths of the unreadable images), ``mean`` and
    ``std`` (of the training pixels, for normalisation), and ``synthetic``
    (True for a replica made by ``synthesize``).
    """

    def __init__(self, name, images, records, skipped_images, mean, std, synthetic=False):
        self.name = name
        self.images = images
        self.records = records
        self.skipped_images = skipped_images
        self.mean = mean
        self.std = std
        self.synthetic = synthetic
        self.labels = np.array([record.label for record in records], dtype=np.int64)
        first_image_of_study = {}
        for i, record in enumerate(records):
            first_image_of_study.setdefault(record.study, i)
        study_index = {study: k for k, study in enumerate(first_image_of_study)}
        self.study_ids = np.array([study_index[record.study] for record in records], dtype=np.int64)
        firsts = [records[i] for i in first_image_of_study.values()]
        self.studies = np.array([record.study for record in firsts], dtype=str)
        self.study_labels = np.array([record.label for record in firsts], dtype=np.int64)
        self.study_types = np.array([record.study_type for record in firsts], dtype=str)

    def __len__(self):
        return len(self.records)

    def __repr__(self):
        return (f"MURASplit({self.name!r}: {len(self)} images, {len(self.studies)} studies, "
                f"{len(self.skipped_images)} skipped, images {self.images.shape})")

    def normalise(self, images):
        """(B, S, S) raw images -> (B, S, S, 1) float32 ``(pixel - mean) / std``, what the network takes."""
        xp = get_array_module(images)
        return ((xp.asarray(images, dtype=xp.float32) - self.mean) / self.std)[..., None]

    def batches(self, batch_size=32, shuffle=None, augment=None, seed=None, sample_weight=None):
        """An ``ArrayBatches`` of ``(x, y)``: x (B, S, S, 1) float32 normalised, y (B,) int64.

        ``shuffle`` and ``augment`` (None, True or False) default to True for ``train`` and False for
        ``valid``. Augmentation (random horizontal flips and rotations of up to
        30 degrees, filled with black) is for training only: asking for it on
        ``valid`` is a ``ValueError``, as is an ``augment`` that is not a flag
        (``"no"``). ``seed`` makes the epochs reproducible.
        With ``sample_weight`` (one loss weight per image, e.g.
        ``MURA.image_weights(by_study_type=True)``), the batches are triples ``(x, y, w)``.
        """
        where, training = f"MURASplit {self.name!r}", self.name == "train"
        shuffle = training if shuffle is None else shuffle  # checked by ArrayBatches
        augment = training if augment is None else check_flag(where, "augment", augment)
        if augment and not training:
            raise ValueError(f"{where}: augmentation is for the training split only")
        flip_rotate = functools.partial(random_flip_rotate, flip=True, max_degrees=_MAX_ROTATION_DEGREES, fill=0.0)
        return ArrayBatches(self.images, self.labels, batch_size, shuffle=shuffle, seed=seed,
                            augment=flip_rotate if augment else None, transform=self.normalise,
                            sample_weight=sample_weight)


class MURA:
    """MURA at one image size: ``train`` and ``valid`` (``MURASplit``), both normalised with the training statistics.

    Also ``root`` (the ``MURA-v1.1`` folder), ``size``, ``resize``, ``mean``,
    ``std``, and ``synthetic`` (True for a replica made by ``synthesize``).
    """

    def __init__(self, root, size, resize, train, valid):
        self.root, self.size, self.resize = root, size, resize
        self.train, self.valid = train, valid
        self.mean, self.std, self.synthetic = train.mean, train.std, train.synthetic

    def __repr__(self):
        kind = "synthetic replica" if self.synthetic else "dataset"
        return f"MURA({kind} at {self.root}, {self.size} px, {self.resize}; train: {self.train}; valid: {self.valid})"

    def class_weights(self, by_study_type=False):
        """The MURA paper's class weights counted over the training images: ``{0: w_normal, 1: w_abnormal}``.

        With ``by_study_type`` (True or False), a dict ``{"XR_WRIST": {0: ..., 1: ...}, ...}``
        counted over each study type's training images.
        """
        if not check_flag("MURA.class_weights", "by_study_type", by_study_type):
            return class_weights(self.train.labels)
        types = self._training_image_types()
        weights = {}
        for kind in sorted(set(types)):
            try:
                weights[kind] = class_weights(self.train.labels[types == kind])
            except ValueError as error:
                raise ValueError(f"MURA: the training images of {kind}: {error}") from None
        return weights

    def image_weights(self, by_study_type=False):
        """One loss weight per training image (N,), float32: its class's weight from :meth:`class_weights`.

        By study type, this is the MURA paper's weighted loss: within each
        study type, abnormal and normal images weigh the same in total. Pass
        it as the training batches' ``sample_weight``.
        """
        labels = self.train.labels
        if not check_flag("MURA.image_weights", "by_study_type", by_study_type):
            weight = self.class_weights()
            return np.where(labels == 1, weight[1], weight[0]).astype(np.float32)
        by_type = self.class_weights(by_study_type=True)
        types = self._training_image_types()
        return np.array([by_type[kind][label] for kind, label in zip(types, labels)], dtype=np.float32)

    def _training_image_types(self):
        return np.array([record.study_type for record in self.train.records])


def load_mura(root, size=64, resize="pad", cache_dir=None, workers=None, progress=True):
    """Load MURA (or a replica) from ``root``, decoding into the cache on the first call; returns ``MURA``.

    ``root``: the ``MURA-v1.1`` folder, its parent, or the parent of a doubled
    ``MURA-v1.1/MURA-v1.1``. ``size``: images become size x size.
    ``resize``: ``"pad"`` or ``"squash"`` (see the module's docstring).
    ``cache_dir``: where the caches live (default ``default_cache_dir()``).
    ``workers``: processes that decode images (default: the CPUs this process may use, at most
    8; 1 decodes in this process). A script that passes more than 1 needs
    the ``if __name__ == "__main__":`` guard wherever processes are not
    forked (macOS, Windows, Linux from Python 3.14). ``progress``: show a
    progress bar while decoding (True or False).

    The arguments are checked before any work: ``ValueError`` for a size or
    ``workers`` that is not a positive int, an unknown ``resize``, or a
    ``progress`` that is not a flag (``"no"``); ``TypeError`` for a ``root``
    or ``cache_dir`` that is not a ``str`` or ``os.PathLike``.
    Unreadable images are left out, each with an ``UnreadableImageWarning``
    naming the file, and listed in ``skipped_images``.
    """
    size, cache_dir, workers, progress = _split_options("load_mura", size, resize, cache_dir, workers, progress)
    root = find_root(_folder("load_mura", "root", root))
    options = dict(size=size, resize=resize, cache_dir=cache_dir, workers=workers, progress=progress)
    train = load_split(root, "train", **options)
    valid = load_split(root, "valid", mean=train.mean, std=train.std, **options)
    return MURA(root, size, resize, train, valid)


def load_split(root, split, size=64, resize="pad", cache_dir=None, workers=None, progress=True, mean=None, std=None):
    """One split (``"train"`` or ``"valid"``) as a ``MURASplit``; the other arguments as for ``load_mura``.

    Its images are normalised with ``mean`` and ``std``, by default the
    split's own pixel statistics. To evaluate a trained model on ``valid``
    alone, pass the statistics of the training images it learnt from
    (``MURA.mean`` and ``MURA.std``; ``train_mura.py`` keeps them in its
    ``run.json``): the training images need not be decoded then; they must
    be finite numbers, ``std`` positive. Bad arguments are refused before
    any work, as by ``load_mura``.
    """
    where = f"load_split({split!r})"
    _one_of(where, "split", split, SPLITS)
    size, cache_dir, workers, progress = _split_options(where, size, resize, cache_dir, workers, progress)
    if (mean is None) != (std is None):
        raise ValueError(f"{where}: give both mean and std, or neither (the split's own statistics)")
    if std is not None:
        number, spread = finite_float(mean), finite_float(std)
        if number is None or spread is None or spread <= 0:
            raise ValueError(f"{where}: mean must be a finite number and std a finite positive number, "
                             f"got {mean!r} and {std!r}")
        mean, std = number, spread
    root = find_root(_folder(where, "root", root))
    images, records, index = _cached_split(root, split, size, resize, cache_dir, workers, progress)
    if mean is None:
        mean, std = index["pixel_mean"], index["pixel_std"]
        if std == 0:
            raise ValueError(f"MURA: every {split} pixel is {mean}; the images carry no information")
    skipped = [skip["path"] for skip in index["skipped_images"]]
    return MURASplit(split, images, records, skipped, mean, std, synthetic=_is_synthetic(root))


def _split_options(where, size, resize, cache_dir, workers, progress):
    """The options ``load_mura`` and ``load_split`` share, checked: ``(size, cache_dir, workers, progress)``.

    ``cache_dir`` as a ``Path`` (None: ``default_cache_dir()``), ``workers`` None as the usable CPUs up to 8.
    """
    size = positive_int(where, "size", size)
    _one_of(where, "resize", resize, RESIZE_MODES)
    cache_dir = default_cache_dir() if cache_dir is None else _folder(where, "cache_dir", cache_dir)
    workers = min(_usable_cpus(), 8) if workers is None else positive_int(where, "workers", workers)
    return size, cache_dir, workers, check_flag(where, "progress", progress)


def _usable_cpus():
    """The CPUs this process may run on: fewer than the machine's in a container or under ``taskset``."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _is_synthetic(root):
    """Whether the ``MURA-v1.1`` folder ``root`` is a replica that ``synthesize`` wrote."""
    readme = root / "README.txt"  # read as bytes: another README.txt may be in any encoding
    return readme.is_file() and readme.read_bytes().startswith(_SYNTHETIC_MARK.encode())


# ------------------------------------------------------ the synthetic replica
def _synthetic_radiograph(rng, height, width, sign):
    """A (height, width) float array in 0..255 that looks vaguely like an X-ray of one bone.

    Dark background, a band of soft tissue, a bright bone with a darker
    marrow cavity, noise; with ``sign``, a very bright elongated blob on the
    bone (like the metal of a screw or plate, common in abnormal MURA studies).
    """
    short = min(height, width)
    rows = np.arange(height, dtype=np.float32)[:, np.newaxis] - height * rng.uniform(0.4, 0.6)
    cols = np.arange(width, dtype=np.float32)[np.newaxis, :] - width * rng.uniform(0.4, 0.6)
    # The bone runs roughly along the long side of the image.
    angle = rng.uniform(-0.4, 0.4) + (np.pi / 2 if width > height else 0.0)
    across = cols * math.cos(angle) - rows * math.sin(angle)  # distance from the bone's axis
    bone_half_width = rng.uniform(0.08, 0.14) * short
    tissue = (across / (0.35 * short)) ** 2
    bone = (across / bone_half_width) ** 2
    bone = bone * bone * bone  # flat-topped profiles: exp(-d^4), exp(-d^6)
    image = (rng.uniform(10, 25) + 50 * np.exp(-tissue * tissue)
             + rng.uniform(0.8, 1.2) * (120 * np.exp(-bone) - 35 * np.exp(-64 * bone))
             + 6 * rng.standard_normal((height, width), dtype=np.float32))
    if sign:
        along = cols * math.sin(angle) + rows * math.cos(angle) - rng.uniform(-0.3, 0.3) * max(height, width)
        across = across - rng.uniform(-1, 1) * bone_half_width
        turn = rng.uniform(0, np.pi)
        length, thickness = rng.uniform(0.10, 0.16) * short, rng.uniform(0.04, 0.07) * short
        u = (along * math.cos(turn) + across * math.sin(turn)) / length
        v = (-along * math.sin(turn) + across * math.cos(turn)) / thickness
        image += 140 * np.exp(-((u * u + v * v) ** 2))
    return np.clip(image, 0, 255)


def synthesize(root, train_patients=120, valid_patients=30, max_studies_per_patient=2, max_images_per_study=3,
               min_size=48, max_size=512, abnormal_fraction=0.4, sign_noise=0.1, seed=0, progress=True):
    """Write a synthetic replica of MURA v1.1 into ``root/MURA-v1.1``; returns that folder's ``Path``.

    Same layout and CSV files as the real dataset (see the module's
    docstring): the seven study types, 5-digit patient ids (train first, then
    valid), 1..max_studies_per_patient studies per patient, all of one study
    type, 1..max_images_per_study PNG images per study (mostly L, some RGB),
    non-square, the long side drawn log-uniformly from [min_size, max_size]
    pixels so that most are small. A share ``abnormal_fraction`` of each
    split's studies (rounded) is abnormal.

    The sign of abnormality is a very bright elongated blob on the bone. It
    is noisy: each image shows it with probability ``1 - sign_noise`` if its
    study is abnormal, ``sign_noise`` if normal. A ``README.txt`` inside says
    that the data are synthetic and how they were made. The same arguments
    give the same files (with an int ``seed``; None draws fresh entropy). If
    ``root/MURA-v1.1`` exists already, it is returned as it is when it is a
    replica made with the same arguments, and ``FileExistsError`` is raised
    otherwise. Processes that synthesize into one ``root`` at the same time
    take turns (a lock file beside the replica); the later ones find the
    replica made (and say that they wait, unless ``progress`` is False).
    A ``root`` that cannot be written into is a ``PermissionError``.

    Checked before anything is written (``ValueError`` naming the argument):
    the patient, study and image counts are positive ints, ``min_size`` and
    ``max_size`` ints with ``2 <= min_size <= max_size <= 8192`` (a square of
    8192 px stays under Pillow's decompression-bomb limit), ``abnormal_fraction`` and
    ``sign_noise`` numbers in [0, 1], ``seed`` None or a non-negative int;
    ``root`` that is not a ``str`` or ``os.PathLike`` is a ``TypeError``.
    """
    counts = dict(train_patients=train_patients, valid_patients=valid_patients,
                  max_studies_per_patient=max_studies_per_patient, max_images_per_study=max_images_per_study)
    arguments = {name: positive_int("synthesize", name, value) for name, value in counts.items()}
    if not (is_int(min_size) and is_int(max_size) and 2 <= min_size <= max_size <= _MAX_SYNTHETIC_SIZE):
        raise ValueError(f"synthesize: need ints 2 <= min_size <= max_size <= {_MAX_SYNTHETIC_SIZE}, "
                         f"got {min_size!r} and {max_size!r}")
    arguments.update(min_size=int(min_size), max_size=int(max_size))
    for name, value in (("abnormal_fraction", abnormal_fraction), ("sign_noise", sign_noise)):
        number = finite_float(value)
        if number is None or not 0.0 <= number <= 1.0:
            raise ValueError(f"synthesize: {name} must be a number in [0, 1], got {value!r}")
        arguments[name] = int(value) if is_int(value) else number  # 0 stays 0 in the README, as it was before
    arguments["seed"] = seed_or_none("synthesize", seed)
    progress = check_flag("synthesize", "progress", progress)
    root = _folder("synthesize", "root", root)
    readme = (f"{_SYNTHETIC_MARK} DATA: a synthetic replica of the MURA v1.1 folder layout, made by\n"
              "minidl.datasets.mura.synthesize. These are NOT radiographs and NOT the MURA dataset:\n"
              "each image is a drawn bone on a dark background, and the 'abnormal' sign is a bright blob,\n"
              "shown by most images of abnormal studies and a few images of normal ones.\n"
              "Results on this data say nothing about medical images.\n\n"
              f"Arguments: {json.dumps(arguments, sort_keys=True)}\n")
    target = root / _FOLDER
    if _existing_replica(target, readme):
        return target
    root.mkdir(parents=True, exist_ok=True)
    if not os.access(root, os.W_OK | os.X_OK):  # a read-only disk too
        raise PermissionError(f"synthesize: {root} cannot be written into; choose another root")
    with _build_lock(root / f".{_FOLDER}.lock", f"the synthetic replica {target}", progress) as locked:
        if _existing_replica(target, readme):  # made by the process this one waited for
            return target
        for stale in (folder for folder in root.glob(f".{_FOLDER}.*") if folder.is_dir()):  # staging folders
            if locked:  # no other synthesis runs: a killed one's
                shutil.rmtree(stale, ignore_errors=True)
            else:
                warnings.warn(f"synthesize: {stale} was left by a synthesis that was killed (unless one is "
                              "running now); delete it", stacklevel=stacklevel_outside(__name__))
        _synthesize_into(root, target, readme, arguments)
    return target


def _existing_replica(target, readme):
    """Whether ``target`` is the replica that ``readme`` describes; ``FileExistsError`` if it holds anything else."""
    if not target.exists():
        return False
    if _has_readme(target, readme):
        return True
    raise FileExistsError(f"synthesize: {target} exists and is not a replica made with these arguments; "
                          "remove it or choose another root")


def _synthesize_into(root, target, readme, arguments):
    """``synthesize``'s writing: the replica into a hidden staging folder of ``root``, renamed ``target`` at the end."""
    rng = default_rng(arguments["seed"])
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{_FOLDER}."))
    staging.chmod(0o755)  # mkdtemp makes it private to its owner
    try:
        first_patient = 1
        for split, patients in (("train", arguments["train_patients"]), ("valid", arguments["valid_patients"])):
            _synthesize_split(staging, split, range(first_patient, first_patient + patients), rng, arguments)
            first_patient += patients
        (staging / "README.txt").write_text(readme, encoding="utf-8", newline="\n")
        try:
            os.replace(staging, target)
        except OSError:
            if not _has_readme(target, readme):
                raise
            shutil.rmtree(staging)  # another process made the same replica meanwhile (it could not lock)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _has_readme(folder, readme):
    """Whether ``folder`` is a replica that ``synthesize`` made with the arguments that ``readme`` states."""
    file = folder / "README.txt"
    # Bytes, as any README.txt may be there; without CRs, as replicas made on Windows before had them.
    return file.is_file() and file.read_bytes().replace(b"\r\n", b"\n") == readme.encode("utf-8")


def _synthesize_split(folder, split, patient_numbers, rng, arguments):
    """Write one split's images and its two CSV files into ``folder``."""
    studies = []  # paths, e.g. train/XR_HAND/patient00001/study1
    for number in patient_numbers:
        study_type = STUDY_TYPES[rng.integers(len(STUDY_TYPES))]
        for k in range(1, rng.integers(1, arguments["max_studies_per_patient"] + 1) + 1):
            studies.append(f"{split}/{study_type}/patient{number:05d}/study{k}")
    abnormal = np.zeros(len(studies), dtype=bool)
    abnormal[rng.permutation(len(studies))[: round(arguments["abnormal_fraction"] * len(studies))]] = True

    image_lines, study_lines = [], []
    log_min, log_max = np.log(arguments["min_size"]), np.log(arguments["max_size"])
    for study, label in zip(studies, abnormal):
        study_folder = f"{study}_{'positive' if label else 'negative'}"
        (folder / study_folder).mkdir(parents=True)
        study_lines.append(f"{_FOLDER}/{study_folder}/,{int(label)}\n")
        for j in range(1, rng.integers(1, arguments["max_images_per_study"] + 1) + 1):
            long_side = int(round(np.exp(rng.uniform(log_min, log_max))))
            short_side = max(2, int(round(long_side * rng.uniform(0.6, 0.95))))
            height, width = (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)
            sign = bool(label) != (rng.random() < arguments["sign_noise"])
            pixels = np.rint(_synthetic_radiograph(rng, height, width, sign)).astype(np.uint8)
            image = Image.fromarray(pixels)
            if rng.random() < 0.25:
                image = image.convert("RGB")
            image.save(folder / study_folder / f"image{j}.png", compress_level=1)
            image_lines.append(f"{_FOLDER}/{study_folder}/image{j}.png\n")
    (folder / f"{split}_image_paths.csv").write_text("".join(image_lines))
    (folder / f"{split}_labeled_studies.csv").write_text("".join(study_lines))
