"""The MURA input pipeline: decoding into the cache, and feeding augmented batches.

Run from the repository root:

    python3 benchmarks/bench_pipeline.py                          # 2,000-image replica, 128 px
    python3 benchmarks/bench_pipeline.py --patients 1100 --copies 11 --size 128   # about 41,000 images

It synthesises a replica of MURA's layout (not timed), then times

* building the cache: decoding every PNG, converting to grey, resizing and
  writing the uint8 memmap, in images per second (``--workers`` processes);
* reading training batches from the cached memmap with augmentation
  (random flips and rotations up to 30 degrees) and normalisation, in images
  per second: this must outpace the training step it feeds. With
  ``--device cupy`` each batch is moved to the GPU first and augmented there.
"""
import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from minidl.backend import set_backend  # noqa: E402
from minidl.datasets import mura  # noqa: E402


def replicate(root, copies):
    """Make the replica at ``root`` ``copies`` times larger: every patient again under new ids, files hard-linked."""
    patient = re.compile(r"patient(\d{5})")
    step = max(int(m[1]) for split in mura.SPLITS
               for m in patient.finditer((root / f"{split}_image_paths.csv").read_text()))
    if step * copies > 99999:
        raise ValueError(f"replicate: {copies} copies of {step} patients do not fit 5-digit patient ids")

    def renumber(line, copy):
        return patient.sub(lambda m: f"patient{int(m[1]) + copy * step:05d}", line)

    for split in mura.SPLITS:
        for line in (root / f"{split}_image_paths.csv").read_text().splitlines():
            for copy in range(1, copies):
                target = root.parent / renumber(line, copy)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(root.parent / line, target)
        for name in (f"{split}_image_paths.csv", f"{split}_labeled_studies.csv"):
            lines = (root / name).read_text().splitlines()
            copied = [renumber(line, copy) for copy in range(1, copies) for line in lines]
            (root / name).write_text("\n".join(lines + copied) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=650, help="training patients in the replica")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--min-size", type=int, default=400,
                        help="smallest long side of a synthetic image (MURA's images are mostly ~500 px)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    parser.add_argument("--epochs", type=int, default=2, help="passes over the training batches to time")
    parser.add_argument("--copies", type=int, default=1,
                        help="enlarge the replica this many times with hard-linked copies under new patient ids "
                             "(decoding cost per image is unchanged; synthesising 40,000 images would take longer)")
    parser.add_argument("--dir", help="work folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--device", choices=["numpy", "cupy"], default="numpy",
                        help="where batches are augmented and normalised (cupy: on the GPU)")
    parser.add_argument("--train", action="store_true",
                        help="also train the reference CNN for an epoch on the augmented batches, against "
                             "as many steps on one fixed batch: does the pipeline keep up with the step?")
    args = parser.parse_args(argv)
    set_backend(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.dir or tmp)
        start = time.perf_counter()
        root = mura.synthesize(work / "replica", train_patients=args.patients,
                               valid_patients=max(args.patients // 8, 1), min_size=args.min_size, seed=0)
        if args.copies > 1:
            replicate(root, args.copies)
        print(f"synthesised the replica in {time.perf_counter() - start:.1f} s (not part of the pipeline)")

        start = time.perf_counter()
        data = mura.load_mura(root, size=args.size, cache_dir=work / "cache", workers=args.workers)
        build = time.perf_counter() - start
        images = len(data.train) + len(data.valid)
        print(f"cache build: {images} images at {args.size} px in {build:.1f} s = {images / build:.0f} images/s "
              f"({os.cpu_count()} cores; all of MURA v1.1, 40,005 images, would take {40005 / (images / build) / 60:.1f} min)")

        start = time.perf_counter()
        mura.load_mura(root, size=args.size, cache_dir=work / "cache", progress=False)
        print(f"cache reuse: {time.perf_counter() - start:.2f} s")

        batches = data.train.batches(args.batch_size, augment=True, seed=0)
        x, _ = next(iter(batches))  # untimed: on a GPU the first batch compiles the augmentation's kernels
        float(x.sum())
        start, seen = time.perf_counter(), 0
        for _ in range(args.epochs):
            for x, _ in batches:
                seen += len(x)
        float(x.sum())  # wait for a GPU to finish
        rate = seen / (time.perf_counter() - start)
        print(f"augmented training batches on {args.device}: {rate:.0f} images/s "
              f"({rate / args.batch_size:.1f} batches of {args.batch_size} per second)")
        result = {"images": images, "build_images_per_s": images / build, "batch_images_per_s": rate}
        if args.train:
            result.update(train_rates(batches, args.size))
        return result


def train_rates(batches, size):
    """Images per second of an epoch of training on ``batches`` and of as many steps on one fixed batch."""
    import common  # benchmarks/common.py: the reference CNN

    model = common.minidl_model(size)
    fixed = None
    for x, y in batches:  # warm-up epoch: memory pool, kernel caches
        model.train_on_batch(x, y)
        fixed = fixed or (x, y)
    rates = {}
    for name, source in (("epoch_images_per_s", batches), ("fixed_batch_images_per_s", None)):
        start, seen = time.perf_counter(), 0
        for x, y in source if source is not None else [fixed] * len(batches):
            seen += len(y)
            model.train_on_batch(x, y)  # returns the loss as a float: waits for the step
        rates[name] = seen / (time.perf_counter() - start)
    print(f"training the reference CNN at {size} px: an augmented epoch at {rates['epoch_images_per_s']:.0f} images/s, "
          f"one fixed batch at {rates['fixed_batch_images_per_s']:.0f} images/s "
          f"({rates['epoch_images_per_s'] / rates['fixed_batch_images_per_s']:.0%})")
    return rates


if __name__ == "__main__":
    main()
