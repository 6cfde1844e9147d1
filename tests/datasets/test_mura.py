"""The MURA loader (minidl.datasets.mura) on tiny hand-made trees and on the synthetic replica."""
import errno
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minidl.datasets import mura
from minidl.datasets.mura import (
    SPLITS, STUDY_TYPES, UnreadableImageWarning, class_weights, find_root, load_image, load_mura, load_split, read_index,
    synthesize,
)

SIZE = 16


def gradient(height=12, width=20, high=255, dtype=np.uint8):
    """A left-to-right ramp from 0 to ``high``: every decoding of it must give the same picture."""
    ramp = np.linspace(0, high, width)
    return np.rint(np.tile(ramp, (height, 1))).astype(dtype)


def png(mode, height=12, width=20):
    """A Pillow image of the gradient in ``mode``."""
    if mode == "I;16":
        return Image.fromarray(gradient(height, width, high=4000, dtype=np.uint16))
    grey = Image.fromarray(gradient(height, width))
    if mode == "LA":
        image = Image.merge("LA", (grey, Image.new("L", grey.size, 0)))  # fully transparent
        return image
    return grey.convert(mode)


CORRUPT = b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4


def write_tree(parent, splits, folder="MURA-v1.1"):
    """Write a MURA tree under ``parent/folder``; returns its path.

    ``splits``: {split: [(study folder below the split, CSV label, [images])]}, an image
    being a Pillow image or raw bytes. Also leaves the junk of a Mac copy around.
    """
    root = parent / folder
    for split, studies in splits.items():
        image_lines, study_lines = [], []
        for study, label, images in studies:
            (root / split / study).mkdir(parents=True)
            study_lines.append(f"MURA-v1.1/{split}/{study}/,{label}\n")
            for j, image in enumerate(images, start=1):
                file = root / split / study / f"image{j}.png"
                if isinstance(image, bytes):
                    file.write_bytes(image)
                else:
                    image.save(file)
                image_lines.append(f"MURA-v1.1/{split}/{study}/image{j}.png\n")
            (root / split / study / "._image1.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
            (root / split / study / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (root / f"{split}_image_paths.csv").write_text("".join(image_lines))
        (root / f"{split}_labeled_studies.csv").write_text("".join(study_lines))
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return root


def quirky_splits():
    return {
        "train": [
            ("XR_WRIST/patient00001/study1_positive", 1, [png("L"), png("RGB", 20, 12)]),
            ("XR_HAND/patient00002/study1_negative", 0, [png("I;16"), png("LA"), png("RGBA")]),
            ("XR_ELBOW/patient00003/study1_negative", 0, [CORRUPT, png("L", 30, 10)]),
            ("XR_ELBOW/patient00003/study2_positive", 1, [png("L", 8, 8)]),
        ],
        "valid": [
            ("XR_WRIST/patient00004/study1_positive", 1, [png("L")]),
            ("XR_FINGER/patient00005/study1_negative", 0, [png("RGB"), png("L")]),
        ],
    }


def load_quiet(root, cache_dir, **options):
    """load_mura at SIZE px in this process, expecting the corrupt image's warning."""
    with pytest.warns(UnreadableImageWarning, match=r"study1_negative[/\\]image1\.png"):
        return load_mura(root, size=SIZE, cache_dir=cache_dir, workers=1, progress=False, **options)


@pytest.fixture
def quirky(tmp_path):
    return write_tree(tmp_path / "data", quirky_splits())


# ------------------------------------------------------------------ finding and indexing
def test_the_first_csv_line_is_data_not_a_header(quirky):
    records = read_index(quirky, "train")
    assert len(records) == 8
    first = records[0]
    assert first.study == "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/"
    assert first.path == first.study + "image1.png"
    assert (first.split, first.study_type, first.patient, first.label) == ("train", "XR_WRIST", "patient00001", 1)
    assert [r.path.rsplit("/", 1)[1] for r in records] == [f"image{j}.png" for j in (1, 2, 1, 2, 3, 1, 2, 1)]


def test_csv_files_that_start_with_a_byte_order_mark_read_the_same(quirky):
    before = read_index(quirky, "train")
    for name in ("train_labeled_studies.csv", "train_image_paths.csv"):
        (quirky / name).write_bytes(b"\xef\xbb\xbf" + (quirky / name).read_bytes())
    assert read_index(quirky, "train") == before


def test_a_split_listing_the_other_splits_paths_is_refused(quirky):
    for kind in ("labeled_studies", "image_paths"):
        (quirky / f"valid_{kind}.csv").write_bytes((quirky / f"train_{kind}.csv").read_bytes())
    with pytest.raises(ValueError, match="does not follow the layout MURA-v1.1/valid/"):
        read_index(quirky, "valid")


def test_the_root_is_found_from_itself_its_parent_and_a_doubled_folder(tmp_path):
    root = write_tree(tmp_path / "plain", quirky_splits())
    assert find_root(root) == root
    assert find_root(root.parent) == root
    doubled = write_tree(tmp_path / "doubled" / "MURA-v1.1", quirky_splits())
    assert doubled == tmp_path / "doubled" / "MURA-v1.1" / "MURA-v1.1"
    assert find_root(tmp_path / "doubled" / "MURA-v1.1") == doubled
    assert find_root(tmp_path / "doubled") == doubled
    assert len(read_index(tmp_path / "doubled", "valid")) == 3
    with pytest.raises(FileNotFoundError, match="train_labeled_studies.csv"):
        find_root(tmp_path)


def test_a_missing_csv_is_an_error_naming_it(quirky):
    (quirky / "valid_image_paths.csv").unlink()
    read_index(quirky, "train")
    with pytest.raises(FileNotFoundError, match="valid_image_paths.csv"):
        read_index(quirky, "valid")


def test_a_missing_image_is_an_error_naming_it(quirky):
    (quirky / "train/XR_HAND/patient00002/study1_negative/image2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"patient00002[/\\]study1_negative[/\\]image2\.png"):
        read_index(quirky, "train")


def test_an_image_listed_twice_is_an_error_naming_both_lines(quirky):
    csv_file = quirky / "valid_image_paths.csv"
    lines = csv_file.read_text().splitlines(keepends=True)
    csv_file.write_text("".join(lines + lines[:1]))
    with pytest.raises(ValueError, match=r"line 4: image '.*patient00004/study1_positive/image1.png' is listed "
                                         r"twice \(first on line 1\)"):
        read_index(quirky, "valid")


def test_a_study_whose_every_image_is_unreadable_is_reported_by_name(tmp_path):
    splits = quirky_splits()
    splits["valid"].append(("XR_HAND/patient00006/study1_positive", 1, [CORRUPT, CORRUPT]))
    root = write_tree(tmp_path / "data", splits)
    with pytest.warns(UnreadableImageWarning) as caught:
        data = load_mura(root, size=SIZE, cache_dir=tmp_path / "cache", workers=1, progress=False)
    messages = [str(w.message) for w in caught]
    assert any("study MURA-v1.1/valid/XR_HAND/patient00006/study1_positive/ has no readable image" in m
               for m in messages)
    assert "MURA-v1.1/valid/XR_HAND/patient00006/study1_positive/" not in data.valid.studies.tolist()


def test_a_label_that_contradicts_the_folder_name_is_an_error(tmp_path):
    splits = quirky_splits()
    splits["valid"][1] = ("XR_FINGER/patient00005/study1_negative", 1, [png("L")])
    root = write_tree(tmp_path, splits)
    with pytest.raises(ValueError, match=r"valid_labeled_studies.csv, line 2: label 1 contradicts .*study1_negative"):
        read_index(root, "valid")


def test_paths_outside_the_layout_are_errors_naming_the_line(quirky):
    csv = quirky / "valid_image_paths.csv"
    csv.write_text(csv.read_text() + "valid/XR_WRIST/patient00004/study1_positive/image1.png\n")
    with pytest.raises(ValueError, match="valid_image_paths.csv, line 4"):
        read_index(quirky, "valid")


# The valid split of quirky_splits(), as its CSV files list it.
WRIST_STUDY = "MURA-v1.1/valid/XR_WRIST/patient00004/study1_positive/"
FINGER_STUDY = "MURA-v1.1/valid/XR_FINGER/patient00005/study1_negative/"
STUDY_LINES = [WRIST_STUDY + ",1", FINGER_STUDY + ",0"]
IMAGE_LINES = [WRIST_STUDY + "image1.png", FINGER_STUDY + "image1.png", FINGER_STUDY + "image2.png"]
BAD_LABEL = "{studies}, line 2: expected 'study folder path/,label' with label 0 or 1, got "


@pytest.mark.parametrize("csv_name, lines, message", [
    pytest.param("studies", [STUDY_LINES[0], FINGER_STUDY.replace("_negative", "_normal") + ",0"],
                 "{studies}, line 2: study folder 'study1_normal' ends neither in _positive nor in _negative",
                 id="study-folder-suffix"),
    pytest.param("studies", [STUDY_LINES[0], FINGER_STUDY + ",normal"], BAD_LABEL + f"[{FINGER_STUDY!r}, 'normal']",
                 id="label-word"),
    pytest.param("studies", [STUDY_LINES[0], FINGER_STUDY + ",2"], BAD_LABEL + f"[{FINGER_STUDY!r}, '2']",
                 id="label-2"),
    pytest.param("studies", [STUDY_LINES[0], FINGER_STUDY + ","], BAD_LABEL + f"[{FINGER_STUDY!r}, '']",
                 id="label-empty"),
    pytest.param("studies", [STUDY_LINES[0], FINGER_STUDY + ",0,0"], BAD_LABEL + f"[{FINGER_STUDY!r}, '0', '0']",
                 id="label-three-columns"),
    pytest.param("studies", STUDY_LINES + [STUDY_LINES[0]],
                 f"{{studies}}, line 3: study {WRIST_STUDY!r} is listed twice", id="study-twice"),
    pytest.param("studies", STUDY_LINES + [WRIST_STUDY.rstrip("/") + ",1"],
                 f"{{studies}}, line 3: study {WRIST_STUDY.rstrip('/')!r} is listed twice",
                 id="study-twice-no-slash"),
    pytest.param("images", [IMAGE_LINES[0], IMAGE_LINES[1] + ",0", IMAGE_LINES[2]],
                 f"{{images}}, line 2: expected one image path, got [{IMAGE_LINES[1]!r}, '0']",
                 id="image-two-columns"),
    pytest.param("images", [IMAGE_LINES[0], ",", IMAGE_LINES[1], IMAGE_LINES[2]],
                 "{images}, line 2: expected one image path, got ['', '']", id="image-line-of-a-comma"),
    pytest.param("images", [IMAGE_LINES[0], IMAGE_LINES[1] + ",", IMAGE_LINES[2]],
                 f"{{images}}, line 2: expected one image path, got [{IMAGE_LINES[1]!r}, '']",
                 id="image-trailing-comma"),
    pytest.param("studies", STUDY_LINES[:1],
                 f"{{images}}, line 2: the study of {IMAGE_LINES[1]!r} is not listed in {{studies}}",
                 id="image-of-an-unlisted-study"),
    pytest.param("images", [], "{images} lists no images", id="images-csv-empty"),
    pytest.param("images", ["", "  ", "\t"], "{images} lists no images", id="images-csv-blank-lines"),
    pytest.param("studies", STUDY_LINES + ["MURA-v1.1/valid/XR_HAND/patient00006/study1_positive/,1"],
                 "1 study of {studies} has no image in {images}, "
                 "e.g. 'MURA-v1.1/valid/XR_HAND/patient00006/study1_positive/'", id="study-without-images"),
])
def test_csv_damage_that_would_mislabel_images_is_an_error_naming_the_file_and_line(quirky, csv_name, lines, message):
    studies, images = quirky / "valid_labeled_studies.csv", quirky / "valid_image_paths.csv"
    # The tree's own CSV files are what the damaged ones are made from.
    assert studies.read_text().splitlines() == STUDY_LINES and images.read_text().splitlines() == IMAGE_LINES
    damaged = studies if csv_name == "studies" else images
    damaged.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(ValueError) as caught:
        read_index(quirky, "valid")
    assert str(caught.value) == "MURA: " + message.format(studies=studies, images=images)
    assert len(read_index(quirky, "train")) == 8  # the other split's files are untouched and still read


@pytest.mark.parametrize("csv_name, header", [("studies", "Img_Path,Label"), ("images", "image"),
                                              ("images", "Img_Path"), ("images", "\n  \nImg_Path")])
def test_a_header_row_added_to_a_csv_file_is_named_as_one(quirky, csv_name, header):
    # Copies of MURA's CSV files in circulation add headers like these; the release has none.
    damaged = quirky / ("valid_labeled_studies.csv" if csv_name == "studies" else "valid_image_paths.csv")
    damaged.write_text(header + "\n" + damaged.read_text())
    with pytest.raises(ValueError) as caught:
        read_index(quirky, "valid")
    line = header.count("\n") + 1  # the first row that is not blank
    assert str(caught.value) == (f"MURA: {damaged}, line {line}: {header.split()[-1].split(',')!r} looks like a "
                                 "header row, which MURA's CSV files do not have (every line is data); if it is one, "
                                 "delete it")


def test_a_csv_file_that_is_not_utf8_is_an_error_naming_it_and_the_line(quirky):
    csv_file = quirky / "valid_labeled_studies.csv"
    csv_file.write_text(csv_file.read_text(), encoding="utf-16")
    with pytest.raises(ValueError) as err:
        read_index(quirky, "valid")
    assert str(err.value) == (f"MURA: {csv_file}, line 1: not UTF-8 text (invalid start byte); MURA's CSV files "
                              "are ASCII")
    lines = csv_file.read_text(encoding="utf-16").splitlines(keepends=True)
    # After a byte-order mark, and with line ends of every kind: the line as csv counts it.
    csv_file.write_bytes(b"\xef\xbb\xbfa\r\nb\rc\nd\xff\n")
    with pytest.raises(ValueError, match=r", line 4: not UTF-8 text"):
        read_index(quirky, "valid")
    # Deep in a long file (MURA's are thousands of lines), the line, not a position within a read chunk.
    csv_file.write_bytes("".join(lines * 2000).encode() + "Mur\u00e4\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf", line {len(lines) * 2000 + 1}: not UTF-8 text"):
        read_index(quirky, "valid")


def test_blank_lines_and_lines_of_spaces_between_rows_are_skipped(quirky):
    listed = read_index(quirky, "valid")
    images = quirky / "valid_image_paths.csv"
    images.write_text("\n".join([IMAGE_LINES[0], "", "   ", IMAGE_LINES[1], " \t ", IMAGE_LINES[2]]) + "\n")
    assert read_index(quirky, "valid") == listed


# ------------------------------------------------------------------ decoding
@pytest.mark.parametrize("mode", ["RGB", "LA", "RGBA", "I;16", "P"])
def test_every_mode_decodes_to_the_same_grey_picture(tmp_path, mode):
    png("L").save(tmp_path / "grey.png")
    png(mode).save(tmp_path / "other.png")
    with Image.open(tmp_path / "other.png") as image:
        assert image.mode == mode
    grey = load_image(tmp_path / "grey.png", SIZE).astype(int)
    other = load_image(tmp_path / "other.png", SIZE).astype(int)
    assert grey.max() == 255
    assert np.abs(grey - other).max() <= 2


def test_pad_keeps_the_aspect_ratio_and_squash_fills_the_square(tmp_path):
    png("L", height=10, width=40).save(tmp_path / "wide.png")
    padded = load_image(tmp_path / "wide.png", SIZE, resize="pad")
    squashed = load_image(tmp_path / "wide.png", SIZE, resize="squash")
    assert padded.shape == squashed.shape == (SIZE, SIZE) and padded.dtype == np.uint8
    content_rows = np.flatnonzero(padded.any(axis=1))
    assert content_rows.tolist() == [6, 7, 8, 9]  # 10 x 40 -> 4 x 16, centred
    assert squashed.any(axis=1).all()
    assert padded[:, -1].max() == squashed[:, -1].max() == 255  # contrast stretched to the full range


def test_pad_centres_a_tall_image_and_rounds_its_scaled_sides(tmp_path):
    rows = np.linspace(1, 255, 40)[:, None] * np.ones((1, 10))  # top to bottom, every column lit
    Image.fromarray(rows.astype(np.uint8)).save(tmp_path / "tall.png")
    content_columns = np.flatnonzero(load_image(tmp_path / "tall.png", SIZE).any(axis=0))
    assert content_columns.tolist() == [6, 7, 8, 9]  # 40 x 10 -> 16 x 4, centred
    png("L", height=11, width=30).save(tmp_path / "odd.png")
    content_rows = np.flatnonzero(load_image(tmp_path / "odd.png", SIZE).any(axis=1))
    assert content_rows.tolist() == [5, 6, 7, 8, 9, 10]  # 11 * 16/30 = 5.87 rounds to 6 rows


def test_the_contrast_is_stretched_from_the_darkest_to_the_brightest_pixel(tmp_path):
    Image.fromarray(gradient(high=150) + np.uint8(50)).save(tmp_path / "dim.png")  # grey levels 50..200
    squashed = load_image(tmp_path / "dim.png", SIZE, resize="squash")
    assert squashed.min() == 0 and squashed.max() == 255
    np.testing.assert_array_equal(squashed, load_image(tmp_path / "dim.png", SIZE, resize="squash"))
    Image.fromarray(gradient()).save(tmp_path / "full.png")
    assert np.abs(squashed.astype(int) - load_image(tmp_path / "full.png", SIZE, resize="squash")).max() <= 2


# ------------------------------------------------------------------ loading
def test_the_quirky_tree_loads_with_the_corrupt_image_left_out(quirky, tmp_path):
    data = load_quiet(quirky, tmp_path / "cache")
    train = data.train
    corrupt = "MURA-v1.1/train/XR_ELBOW/patient00003/study1_negative/image1.png"
    assert train.skipped_images == [corrupt] and data.valid.skipped_images == []
    assert len(train) == 7 and corrupt not in [r.path for r in train.records]
    assert isinstance(train.images, np.memmap) and not train.images.flags.writeable
    assert train.images.shape == (7, SIZE, SIZE) and train.images.dtype == np.uint8
    assert np.all(train.images.max(axis=(1, 2)) == 255)
    assert not any("._" in r.path for r in train.records + data.valid.records)
    assert data.synthetic is False


def test_a_file_that_is_not_an_image_is_left_out_with_its_path_in_the_reason(quirky, tmp_path):
    # Each file is decoded from memory; Pillow's message would name the in-memory buffer, new each run.
    victim = quirky / "train/XR_WRIST/patient00001/study1_positive/image1.png"
    victim.write_text("not a PNG")
    with pytest.warns(UnreadableImageWarning) as caught:
        load_mura(quirky, size=SIZE, cache_dir=tmp_path / "cache", workers=1, progress=False)
    expected = f"MURA: left out unreadable image {victim} (UnidentifiedImageError: cannot identify image file " \
               f"{str(victim)!r})"
    assert expected in [str(w.message) for w in caught]


def test_images_are_grouped_by_study(quirky, tmp_path):
    train = load_quiet(quirky, tmp_path / "cache").train
    np.testing.assert_array_equal(train.labels, [1, 1, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(train.study_ids, [0, 0, 1, 1, 1, 2, 3])
    assert train.studies.tolist() == [
        "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/",
        "MURA-v1.1/train/XR_HAND/patient00002/study1_negative/",
        "MURA-v1.1/train/XR_ELBOW/patient00003/study1_negative/",
        "MURA-v1.1/train/XR_ELBOW/patient00003/study2_positive/",
    ]
    np.testing.assert_array_equal(train.study_labels, [1, 0, 0, 1])
    assert train.study_types.tolist() == ["XR_WRIST", "XR_HAND", "XR_ELBOW", "XR_ELBOW"]


def test_class_weights_follow_the_mura_paper():
    assert class_weights([1, 0, 0, 0]) == {0: 0.25, 1: 0.75}
    weights = class_weights(np.array([1, 1, 0, 0, 0, 0, 1]))
    assert weights == pytest.approx({0: 3 / 7, 1: 4 / 7})
    with pytest.raises(ValueError, match="both classes"):
        class_weights([0, 0])
    with pytest.raises(ValueError, match="0 or 1"):
        class_weights([0, 2])


def test_class_weights_take_labels_from_the_gpu(fake_cupy):
    labels = np.array([1, 1, 0, 0, 0, 0, 1])
    assert class_weights(fake_cupy.ndarray(labels)) == class_weights(labels)


def test_class_weights_count_training_images_overall_and_per_study_type(tmp_path):
    splits = {
        "train": [
            ("XR_HAND/patient00001/study1_positive", 1, [png("L")]),
            ("XR_HAND/patient00002/study1_negative", 0, [png("L"), png("L"), png("L")]),
            ("XR_WRIST/patient00003/study1_positive", 1, [png("L"), png("L")]),
            ("XR_WRIST/patient00004/study1_negative", 0, [png("L"), png("L")]),
        ],
        "valid": [("XR_HAND/patient00005/study1_positive", 1, [png("L")] * 5)],
    }
    data = load_mura(write_tree(tmp_path, splits), size=8, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert data.class_weights() == pytest.approx({0: 3 / 8, 1: 5 / 8})
    by_type = data.class_weights(by_study_type=True)
    assert by_type.keys() == {"XR_HAND", "XR_WRIST"}
    assert by_type["XR_HAND"] == pytest.approx({0: 1 / 4, 1: 3 / 4})
    assert by_type["XR_WRIST"] == pytest.approx({0: 1 / 2, 1: 1 / 2})
    # One loss weight per training image, in the order of the image CSV (hand, then wrist).
    np.testing.assert_allclose(data.image_weights(by_study_type=True), [3 / 4, 1 / 4, 1 / 4, 1 / 4, 1 / 2, 1 / 2, 1 / 2, 1 / 2])
    np.testing.assert_allclose(data.image_weights(), [5 / 8] + [3 / 8] * 3 + [5 / 8] * 2 + [3 / 8] * 2)
    for weights in (data.image_weights(by_study_type=True), data.image_weights()):
        labels = data.train.labels
        assert weights[labels == 1].sum() == pytest.approx(weights[labels == 0].sum())
    x, y, w = next(iter(data.train.batches(4, shuffle=False, augment=False, sample_weight=data.image_weights(by_study_type=True))))
    np.testing.assert_allclose(w, [3 / 4, 1 / 4, 1 / 4, 1 / 4])


def test_per_study_type_weights_name_a_type_with_one_class(tmp_path):
    splits = {
        "train": [
            ("XR_HAND/patient00001/study1_positive", 1, [png("L")]),
            ("XR_HAND/patient00002/study1_negative", 0, [png("L")]),
            ("XR_WRIST/patient00003/study1_positive", 1, [png("L")]),
        ],
        "valid": [("XR_HAND/patient00005/study1_positive", 1, [png("L")])],
    }
    data = load_mura(write_tree(tmp_path, splits), size=8, cache_dir=tmp_path / "cache", workers=1, progress=False)
    with pytest.raises(ValueError, match="XR_WRIST.*both classes"):
        data.image_weights(by_study_type=True)
    assert data.image_weights().shape == (3,)
    # "no" is no flag: it must not take the per-type path (which fails here) nor any other.
    for method in ("class_weights", "image_weights"):
        for flag in ("no", None, 2, np.array([True])):
            with pytest.raises(ValueError, match=rf"^MURA.{method}: by_study_type must be True or False, got "):
                getattr(data, method)(by_study_type=flag)


def test_batches_cover_every_image_normalised_with_the_training_statistics(quirky, tmp_path):
    data = load_quiet(quirky, tmp_path / "cache")
    pixels = np.asarray(data.train.images, dtype=np.float64)
    assert data.mean == pytest.approx(pixels.mean()) and data.std == pytest.approx(pixels.std())
    assert data.valid.mean == data.mean and data.valid.std == data.std
    batches = data.train.batches(batch_size=3, augment=False, seed=0)
    assert len(batches) == 3
    pairs = list(batches)
    assert [len(y) for _, y in pairs] == [3, 3, 1]
    x = np.concatenate([xb for xb, _ in pairs])
    assert x.shape == (7, SIZE, SIZE, 1) and x.dtype == np.float32
    assert x.mean() == pytest.approx(0.0, abs=1e-5) and x.std() == pytest.approx(1.0, abs=1e-5)
    assert sorted(np.concatenate([y for _, y in pairs]).tolist()) == sorted(data.train.labels.tolist())
    valid = list(data.valid.batches(batch_size=2))
    np.testing.assert_allclose(valid[0][0][..., 0], (data.valid.images[:2] - data.mean) / data.std, rtol=1e-6)


def test_a_split_alone_takes_given_statistics_and_decodes_no_other_split(quirky, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    calls = count_decoding(monkeypatch)
    valid = load_split(quirky, "valid", size=SIZE, cache_dir=cache, workers=1, progress=False, mean=100.0, std=50.0)
    assert len(calls) == 3 and all("valid" in str(file) for file in calls)
    assert (valid.mean, valid.std, valid.synthetic, valid.skipped_images) == (100.0, 50.0, False, [])
    x, _ = next(iter(valid.batches(batch_size=3)))
    np.testing.assert_allclose(x[..., 0], (valid.images.astype(np.float64) - 100.0) / 50.0, rtol=1e-6)

    data = load_quiet(quirky, cache)  # the valid split, cached, is the one load_mura hands out
    np.testing.assert_array_equal(valid.images, data.valid.images)
    assert len(calls) == 11
    own = load_split(quirky, "valid", size=SIZE, cache_dir=cache, workers=1, progress=False)
    pixels = np.asarray(own.images, dtype=np.float64)
    assert own.mean == pytest.approx(pixels.mean()) and own.std == pytest.approx(pixels.std())


STATISTICS = r"mean must be a finite number and std a finite positive number, got "


@pytest.mark.parametrize("options, message", [
    ({"split": "test"}, r"load_split\('test'\): split must be one of \('train', 'valid'\)"),
    ({"split": np.array(["valid", "train"])}, r"split must be one of \('train', 'valid'\), got array"),
    ({"resize": np.array(["pad", "squash"])}, r"load_split\('valid'\): resize must be one of .*, got array"),
    ({"mean": 1.0}, "give both mean and std, or neither"),
    ({"mean": 1.0, "std": 0.0}, STATISTICS + "1.0 and 0.0"),
    ({"mean": float("nan"), "std": 1.0}, STATISTICS + "nan and 1.0"),
    ({"mean": "x", "std": 1.0}, STATISTICS + "'x' and 1.0"),
    ({"mean": [1, 2], "std": 1.0}, STATISTICS + r"\[1, 2\] and 1.0"),
    ({"mean": True, "std": 1.0}, STATISTICS + "True and 1.0"),
    ({"mean": 1.0, "std": True}, STATISTICS + "1.0 and True"),
])
def test_bad_statistics_or_split_names_are_clear_errors(quirky, tmp_path, options, message):
    options = {"split": "valid", **options}
    with pytest.raises(ValueError, match=message):
        load_split(quirky, cache_dir=tmp_path / "cache", **options)
    assert not (tmp_path / "cache").exists()


def test_a_split_without_one_decodable_image_is_an_error_that_leaves_no_cache(tmp_path):
    splits = quirky_splits()
    splits["valid"] = [("XR_WRIST/patient00004/study1_positive", 1, [CORRUPT]),
                       ("XR_FINGER/patient00005/study1_negative", 0, [CORRUPT, b""])]
    root = write_tree(tmp_path / "data", splits)
    cache = tmp_path / "cache"
    options = dict(size=SIZE, cache_dir=cache, workers=1, progress=False, mean=100.0, std=50.0)
    with pytest.warns(UnreadableImageWarning) as caught, pytest.raises(ValueError) as error:
        load_split(root, "valid", **options)
    assert str(error.value) == "MURA: none of the 3 valid images could be decoded"
    left_out = sorted(re.search(r"patient\d+/study1_\w+/image\d\.png", str(w.message).replace(os.sep, "/"))[0]
                      for w in caught if w.category is UnreadableImageWarning)
    assert left_out == ["patient00004/study1_positive/image1.png", "patient00005/study1_negative/image1.png",
                        "patient00005/study1_negative/image2.png"]
    assert cache_files(cache) == []  # neither the .npy nor its temporary file

    png("L").save(root / "valid/XR_FINGER/patient00005/study1_negative/image2.png")
    with pytest.warns(UnreadableImageWarning):
        valid = load_split(root, "valid", **options)
    assert [record.path for record in valid.records] == [IMAGE_LINES[2]]


def test_images_that_are_all_one_grey_are_refused(tmp_path):
    flat = Image.new("L", (8, 8), 90)
    root = write_tree(tmp_path, {split: [("XR_HAND/patient00001/study1_negative", 0, [flat])] for split in SPLITS})
    with pytest.raises(ValueError, match="every train pixel is 0.0; the images carry no information"):
        load_mura(root, size=8, cache_dir=tmp_path / "cache", workers=1, progress=False)


def test_augmentation_is_for_training_only_and_seeded(quirky, tmp_path):
    data = load_quiet(quirky, tmp_path / "cache")
    assert data.train.batches().augment is not None and data.train.batches().shuffle
    assert data.valid.batches().augment is None and not data.valid.batches().shuffle
    with pytest.raises(ValueError, match="training split only"):
        data.valid.batches(augment=True)
    for split in (data.train, data.valid):
        for flag in ("no", -1, 2.5):  # "no" turned the training augmentation on; on valid it was "training only"
            with pytest.raises(ValueError, match=rf"^MURASplit '{split.name}': augment must be True or False, "
                                                 rf"got {re.escape(repr(flag))}$"):
                split.batches(augment=flag)
    assert data.train.batches(augment=np.bool_(False)).augment is None
    assert data.valid.batches(augment=0).augment is None
    first = [x for x, _ in data.train.batches(batch_size=7, seed=1)][0]
    again = [x for x, _ in data.train.batches(batch_size=7, seed=1)][0]
    plain = [x for x, _ in data.train.batches(batch_size=7, augment=False, seed=1)][0]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, plain)


# ------------------------------------------------------------------ the cache
def cache_files(cache_dir):
    """The files of ``cache_dir`` but the lock files, which stay (deleting one could let two processes each hold
    a lock of the same name)."""
    return sorted(p.name for p in cache_dir.iterdir() if p.suffix != ".lock")


def forbid_decoding(monkeypatch):
    def decode(*args, **kwargs):
        raise AssertionError("the cache should have been reused, not rebuilt")

    monkeypatch.setattr(mura, "load_image", decode)


def count_decoding(monkeypatch):
    """The list of the files the cache builds decode from now on (each is read, then decoded from memory)."""
    calls = []
    real = mura._decode_or_error

    def decode(file, size, resize):
        calls.append(file)
        return real(file, size, resize)

    monkeypatch.setattr(mura, "_decode_or_error", decode)
    return calls


def test_the_cache_is_reused(quirky, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_quiet(quirky, cache)
    assert len(cache_files(cache)) == 4  # .npy and .json for train and valid
    npy = cache / next(name for name in cache_files(cache) if "-train-" in name and name.endswith(".npy"))
    mtime = npy.stat().st_mtime_ns
    forbid_decoding(monkeypatch)
    second = load_quiet(quirky, cache)  # the skipped image is reported again
    np.testing.assert_array_equal(first.train.images, second.train.images)
    assert second.train.skipped_images == first.train.skipped_images
    assert second.mean == first.mean
    assert npy.stat().st_mtime_ns == mtime


def test_the_cache_is_rebuilt_when_an_image_changes(quirky, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    before = np.array(load_quiet(quirky, cache).valid.images)
    Image.fromarray(gradient()[:, ::-1].copy()).save(quirky / "valid/XR_WRIST/patient00004/study1_positive/image1.png")
    calls = count_decoding(monkeypatch)
    after = load_quiet(quirky, cache)
    assert len(calls) == 3  # valid only: the train cache still holds
    np.testing.assert_array_equal(after.valid.images[0], before[0][:, ::-1])
    assert len(cache_files(cache)) == 4


def test_the_cache_is_rebuilt_when_an_image_is_touched_even_with_the_same_bytes(quirky, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    load_quiet(quirky, cache)
    image = quirky / "valid/XR_WRIST/patient00004/study1_positive/image1.png"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new modification time only
    calls = count_decoding(monkeypatch)
    load_quiet(quirky, cache)
    assert len(calls) == 3  # the valid split again


@pytest.mark.parametrize("damage", [lambda index: {**index, "shape": []}, lambda index: [], lambda index: "text"],
                         ids=["shape", "a list", "a string"])
def test_a_cache_index_that_is_damaged_is_rebuilt_not_a_crash(quirky, tmp_path, monkeypatch, damage):
    import json

    cache = tmp_path / "cache"
    load_quiet(quirky, cache)
    index_file = next(cache.glob("*-valid-*.json"))
    index = json.loads(index_file.read_text())
    index_file.write_text(json.dumps(damage(index)))
    calls = count_decoding(monkeypatch)
    load_quiet(quirky, cache)
    assert len(calls) == 3


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_bytes(array):
    buffer = io.BytesIO()
    np.savez(buffer, images=array)
    return buffer.getvalue()


@pytest.mark.parametrize("damage", [
    pytest.param(lambda raw: npy_bytes(np.load(io.BytesIO(raw))[:1]), id="one-row"),
    pytest.param(lambda raw: raw[: len(raw) // 2], id="truncated-in-the-pixels"),
    pytest.param(lambda raw: raw[:50], id="truncated-in-the-header"),
    pytest.param(lambda raw: npy_bytes(np.load(io.BytesIO(raw)).astype(np.float32)), id="float32"),
    pytest.param(lambda raw: npy_bytes(np.load(io.BytesIO(raw))[:, ::2, ::2]), id="smaller-images"),
    pytest.param(lambda raw: npy_bytes(np.load(io.BytesIO(raw)).reshape(3, -1)), id="two-dimensional"),
    pytest.param(lambda raw: b"garbage", id="not-an-npy-file"),
    pytest.param(lambda raw: b"", id="empty"),
    pytest.param(lambda raw: npz_bytes(np.load(io.BytesIO(raw))), id="an-npz-archive"),
])
def test_a_damaged_cache_array_beside_a_valid_index_is_rebuilt(quirky, tmp_path, monkeypatch, damage):
    cache = tmp_path / "cache"
    first = load_quiet(quirky, cache)
    valid, train = np.array(first.valid.images), np.array(first.train.images)
    assert valid.shape == (3, SIZE, SIZE)
    del first  # unmapped before its file is replaced
    npy = next(cache.glob("*-valid-*.npy"))
    index = npy.with_suffix(".json").read_text()
    damaged = tmp_path / "damaged.npy"
    damaged.write_bytes(damage(npy.read_bytes()))
    os.replace(damaged, npy)  # the .json still holds the right key: only the .npy is wrong

    calls = count_decoding(monkeypatch)
    again = load_quiet(quirky, cache)
    assert sorted(Path(file).relative_to(quirky).as_posix() for file in calls) == sorted(
        line[len("MURA-v1.1/"):] for line in IMAGE_LINES), "the valid images, and only they, must be decoded again"
    np.testing.assert_array_equal(again.valid.images, valid)
    np.testing.assert_array_equal(again.train.images, train)
    assert npy.with_suffix(".json").read_text() == index  # the same images give the same index
    del again
    forbid_decoding(monkeypatch)
    np.testing.assert_array_equal(load_quiet(quirky, cache).valid.images, valid)  # the rebuilt cache is whole


def test_a_cache_array_that_cannot_be_opened_for_another_reason_is_an_error_not_a_rebuild(quirky, tmp_path, monkeypatch):
    # Only a missing or malformed array means "build it again"; a permission error is the user's to see.
    cache = tmp_path / "cache"
    load_quiet(quirky, cache)

    open_memmap, refused = np.lib.format.open_memmap, []

    def refuse_once(file, mode="r+", *args, **kwargs):  # once: a rebuild would then read its new file
        if not refused:
            refused.append(file)
            raise PermissionError(f"no permission to read {file}")
        return open_memmap(file, mode, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "open_memmap", refuse_once)
    forbid_decoding(monkeypatch)
    with pytest.raises(PermissionError, match="no permission to read .*-train-"):
        load_mura(quirky, size=SIZE, cache_dir=cache, workers=1, progress=False)


def test_each_size_and_resize_mode_has_its_own_cache(quirky, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    load_quiet(quirky, cache)
    calls = count_decoding(monkeypatch)
    with pytest.warns(UnreadableImageWarning):
        smaller = load_mura(quirky, size=12, cache_dir=cache, workers=1, progress=False)
    assert smaller.train.images.shape == (7, 12, 12)
    assert len(calls) == 11
    load_quiet(quirky, cache, resize="squash")
    assert len(calls) == 22
    assert len(cache_files(cache)) == 12
    load_quiet(quirky, cache)
    assert len(calls) == 22


def test_a_crash_mid_build_leaves_no_cache_that_looks_valid(quirky, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real = mura.load_image
    calls = []

    def crash_on_the_third_image(file, size, resize="pad"):
        calls.append(file)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(file, size, resize)

    monkeypatch.setattr(mura, "load_image", crash_on_the_third_image)
    with pytest.raises(KeyboardInterrupt):
        load_mura(quirky, size=SIZE, cache_dir=cache, workers=1, progress=False)
    assert cache_files(cache) == []  # no temporary file left either
    load_quiet(quirky, cache)  # builds from scratch

    # A crash while rebuilding a stale cache must not leave the old index in place.
    (quirky / "train/XR_WRIST/patient00001/study1_positive/image1.png").write_bytes(
        (quirky / "train/XR_ELBOW/patient00003/study2_positive/image1.png").read_bytes())
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        load_mura(quirky, size=SIZE, cache_dir=cache, workers=1, progress=False)
    assert not any(name.endswith(".json") and "-train-" in name for name in cache_files(cache))
    calls_after = count_decoding(monkeypatch)
    load_quiet(quirky, cache)
    assert len(calls_after) == 8


def test_a_cache_folder_that_cannot_be_written_is_named_before_any_decoding(quirky, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    calls = count_decoding(monkeypatch)
    # As root, chmod cannot make a folder unwritable: os.access stands in for a read-only disk.
    monkeypatch.setattr(mura.os, "access", lambda path, mode: Path(path) != cache)
    with pytest.raises(PermissionError) as err:
        load_mura(quirky, size=SIZE, cache_dir=cache, workers=1, progress=False)
    assert str(err.value) == f"MURA: the train cache must be built, but {cache} cannot be written to; choose " \
                             "another cache_dir"
    assert calls == [] and cache_files(cache) == []


@pytest.mark.parametrize("allocates_ahead", [True, False], ids=["posix_fallocate", "free-space check"])
def test_a_cache_too_large_for_the_disk_is_refused_before_any_decoding(quirky, tmp_path, monkeypatch, allocates_ahead):
    cache = tmp_path / "cache"
    pixels = 8 * SIZE * SIZE  # the train split lists 8 images; the .npy adds its header
    room = {}

    def free_space(nbytes):
        room["free"] = nbytes
        monkeypatch.setattr(mura.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 0, room["free"]))

    if allocates_ahead:
        def posix_fallocate(fd, offset, length):
            if length > room["free"]:
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(mura.os, "posix_fallocate", posix_fallocate, raising=False)
    else:  # macOS has no posix_fallocate
        monkeypatch.delattr(mura.os, "posix_fallocate", raising=False)
    calls = count_decoding(monkeypatch)
    free_space(pixels - 1)
    with pytest.raises(OSError, match=rf"^\[Errno 28\] MURA: the train cache needs {pixels + 128} bytes but "
                                      rf".*cache has {pixels - 1} bytes free; choose a smaller size or another "
                                      r"cache_dir$") as err:
        load_mura(quirky, size=SIZE, cache_dir=cache, workers=1, progress=False)
    assert err.value.errno == errno.ENOSPC
    assert calls == [] and cache_files(cache) == []

    free_space(pixels + 4096)
    load_quiet(quirky, cache)
    assert len(calls) == 11
    # A stale cache is deleted before the check (it would stay on disk until the new one
    # replaced it), so the new one needs the whole room again.
    (quirky / "train_labeled_studies.csv").write_text((quirky / "train_labeled_studies.csv").read_text() + "\n")
    free_space(pixels - 1)
    with pytest.raises(OSError, match="the train cache needs"):
        load_mura(quirky, size=SIZE, cache_dir=cache, workers=1, progress=False)
    assert not [name for name in cache_files(cache) if "-train-" in name]
    free_space(pixels + 4096)
    load_quiet(quirky, cache)
    assert len(calls) == 19


def test_an_image_whose_decoder_raises_an_os_error_with_an_errno_is_still_only_unreadable(quirky, tmp_path,
                                                                                          monkeypatch):
    # Pillow can take a corrupt file for another format and fail with EINVAL: the file was read, the image is bad.
    real = mura.load_image
    calls = []

    def load_image(file, size, resize="pad"):
        calls.append(file)
        if len(calls) == 2:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(file, size, resize)

    monkeypatch.setattr(mura, "load_image", load_image)
    with pytest.warns(UnreadableImageWarning) as caught:
        data = load_mura(quirky, size=SIZE, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert any("(OSError: [Errno 22] Invalid argument)" in str(w.message) for w in caught)
    assert len(data.train.skipped_images) == 2  # the quirky tree's corrupt image, and this one


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
def test_a_lock_file_this_user_cannot_write_is_locked_through_a_read_only_descriptor(tmp_path, monkeypatch):
    # Another user's lock file in a shared cache_dir (as root, chmod cannot deny the write: os.open stands in).
    real_open, opened = os.open, []

    def open_(path, flags, *mode):
        opened.append(flags & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR))
        if str(path).endswith(".lock") and flags & os.O_RDWR:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *mode)

    lock_file = tmp_path / "x.lock"
    lock_file.touch()  # the other user's
    monkeypatch.setattr(mura.os, "open", open_)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "cannot lock" warning
        with mura._build_lock(lock_file, "the cache x", progress=False) as locked:
            assert locked
    assert opened == [os.O_RDWR, os.O_RDONLY]


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
def test_a_file_system_that_cannot_lock_builds_with_a_warning_and_keeps_leftover_files(quirky, tmp_path,
                                                                                         monkeypatch):
    def flock(descriptor, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(mura.fcntl, "flock", flock)
    cache = tmp_path / "cache"
    cache.mkdir()
    npy = mura._cache_files(cache, quirky, "train", SIZE, "pad")[0]
    leftover = cache / f".{npy.name}.0123456789ab.tmp"  # unlocked, it may be another build's
    leftover.write_bytes(bytes(10))
    with pytest.warns(UserWarning) as caught:
        load_mura(quirky, size=SIZE, cache_dir=cache, workers=1, progress=False)
    messages = [str(w.message) for w in caught]
    assert f"MURA: cannot lock {npy.with_suffix('.lock')} (No locks available); building the cache {npy.stem} " \
           "without the lock, so another run must not build it at the same time" in messages
    assert f"MURA: {leftover} was left by a build of this cache that was killed (unless another process is " \
           "building it now); delete it to free the space" in messages
    assert leftover.exists()
    forbid_decoding(monkeypatch)
    load_quiet(quirky, cache)  # built: read without a lock


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="the system cannot allocate a file's blocks ahead")
def test_the_disk_space_of_a_cache_is_allocated_before_it_is_filled(tmp_path):
    # A write into a memory-mapped sparse file that finds the disk full kills the process (SIGBUS).
    file = tmp_path / "sparse.npy"
    with open(file, "wb") as f:
        f.truncate(4 * 2**20)
    assert file.stat().st_blocks * 512 < 2**20
    mura._reserve_disk_space(file, "train")
    assert file.stat().st_blocks * 512 >= 4 * 2**20
    assert file.stat().st_size == 4 * 2**20


def test_a_file_system_error_stops_the_build_and_is_not_cached_as_an_unreadable_image(quirky, tmp_path, monkeypatch):
    # A permission denied or an I/O error may not recur: caching the image as unreadable would leave it out for good.
    cache = tmp_path / "cache"
    real = Path.read_bytes
    victim = quirky / "train/XR_HAND/patient00002/study1_negative/image2.png"

    def read_bytes(path):  # as root, chmod cannot make a file unreadable
        if path == victim:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(PermissionError) as err:
        load_mura(quirky, size=SIZE, cache_dir=cache, workers=1, progress=False)
    assert str(err.value) == f"[Errno 13] MURA: cannot read {victim} (Permission denied); nothing was cached"
    assert err.value.errno == errno.EACCES
    assert cache_files(cache) == []
    monkeypatch.setattr(Path, "read_bytes", real)
    with pytest.warns(UnreadableImageWarning) as caught:  # the corrupt image, and only it, is left out
        data = load_mura(quirky, size=SIZE, cache_dir=cache, workers=1, progress=False)
    assert len(caught) == 1 and "patient00003/study1_negative/image1.png" in str(caught[0].message)
    assert str(victim.relative_to(quirky.parent)) in [record.path for record in data.train.records]


@pytest.mark.skipif(sys.platform != "linux", reason="concurrent builds are coordinated by fcntl locks, tested on Linux")
@pytest.mark.filterwarnings("ignore::minidl.datasets.mura.UnreadableImageWarning")
def test_processes_that_need_the_same_cache_build_it_once(quirky, tmp_path, monkeypatch):
    # Threads stand in for processes: flock locks belong to open files, not to processes.
    cache = tmp_path / "cache"
    calls = count_decoding(monkeypatch)
    first_decoding, release = threading.Event(), threading.Event()
    real = mura.load_image

    def slow_decode(file, size, resize="pad"):
        first_decoding.set()
        release.wait(timeout=30)
        return real(file, size, resize)

    monkeypatch.setattr(mura, "load_image", slow_decode)
    results, errors = {}, []

    def load(name):
        try:
            results[name] = mura.load_split(quirky, "train", size=SIZE, cache_dir=cache, workers=1, progress=False)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    first = threading.Thread(target=load, args=("first",))
    first.start()
    assert first_decoding.wait(timeout=30)
    second = threading.Thread(target=load, args=("second",))
    second.start()
    second.join(timeout=0.5)
    assert second.is_alive()  # waiting for the lock, not decoding
    release.set()
    first.join(timeout=60)
    second.join(timeout=60)
    assert errors == []
    assert len(calls) == 8  # the train split's 8 images, decoded once
    np.testing.assert_array_equal(np.asarray(results["first"].images), np.asarray(results["second"].images))


def test_a_file_left_by_a_killed_build_is_deleted_by_the_next_build(quirky, tmp_path):
    # The next build holds the cache's lock, so no other process can be writing the file.
    cache = tmp_path / "cache"
    load_quiet(quirky, cache)
    npy = next(cache.glob("*-train-*.npy"))
    stale = cache / f".{npy.name}.0123456789ab.tmp"
    stale.write_bytes(bytes(3000))
    other = cache / f".other-{npy.name}.0123456789ab.tmp"  # not this cache's: kept
    other.write_bytes(bytes(10))
    (quirky / "train_labeled_studies.csv").write_text((quirky / "train_labeled_studies.csv").read_text() + "\n")
    load_quiet(quirky, cache)
    assert not stale.exists() and other.exists()


def test_an_interrupted_build_in_worker_processes_leaves_no_worker_and_no_file(quirky, tmp_path, monkeypatch):
    import multiprocessing

    def interrupt(results, **kwargs):
        for count, result in enumerate(results):
            if count == 2:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(mura, "tqdm", interrupt)
    terminated, terminate = [], mura._terminate_workers
    monkeypatch.setattr(mura, "_terminate_workers", lambda pool: terminated.append(pool) or terminate(pool))
    with pytest.raises(KeyboardInterrupt):
        load_mura(quirky, size=SIZE, cache_dir=tmp_path / "cache", workers=2, progress=False)
    assert len(terminated) == 1  # stopped, not waited for: a worker may be blocked on a full pipe
    assert multiprocessing.active_children() == []
    assert cache_files(tmp_path / "cache") == []



@pytest.mark.parametrize("workers", [1, 2])
def test_the_caching_bar_counts_every_image(quirky, tmp_path, capsys, workers):
    with pytest.warns(UnreadableImageWarning):
        load_mura(quirky, size=SIZE, cache_dir=tmp_path / "cache", workers=workers, progress=True)
    bar = capsys.readouterr().err
    # The last state of each split's bar (tqdm redraws it after a carriage return).
    finals = {split: re.findall(rf"Caching MURA {split} at {SIZE} px: *\d+%\|[^|]*\| *(\d+)/(\d+)", bar)[-1]
              for split in SPLITS}
    assert finals == {"train": ("8", "8"), "valid": ("3", "3")}


KILL_A_WORKER = """
import os, sys
from minidl.datasets import mura
def load_image(file, size, resize="pad"):
    os._exit(9)  # as the kernel's out-of-memory killer would end it
mura.load_image = load_image  # inherited by the forked workers
try:
    mura.load_mura(sys.argv[1], size=16, cache_dir=sys.argv[2], workers=2, progress=False)
except Exception as error:
    print(type(error).__name__)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the test's workers inherit a patch by forking")
def test_a_worker_that_dies_stops_the_build_with_an_error_not_a_hang(quirky, tmp_path):
    script = tmp_path / "kill_a_worker.py"
    script.write_text(KILL_A_WORKER)
    repo = Path(__file__).parents[2]
    result = subprocess.run([sys.executable, str(script), str(quirky), str(tmp_path / "cache")],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(repo)})
    assert result.stdout.strip() == "BrokenProcessPool", result.stderr[-2000:]
    assert cache_files(tmp_path / "cache") == []


def test_warnings_point_at_the_callers_line(quirky, tmp_path):
    with pytest.warns(UnreadableImageWarning) as caught:
        load_mura(quirky, size=SIZE, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert {Path(w.filename) for w in caught} == {Path(__file__)}


def test_an_image_too_large_for_pillow_is_skipped_as_unreadable(quirky, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # Pillow refuses more than twice that: all but the 8 x 8 image
    with warnings.catch_warnings(record=True) as caught:  # Pillow's own warning too, and three lost studies
        warnings.simplefilter("always")
        train = load_split(quirky, "train", size=SIZE, cache_dir=tmp_path / "cache", workers=1, progress=False)
    bombs = [w for w in caught if w.category is UnreadableImageWarning and "DecompressionBombError" in str(w.message)]
    assert len(bombs) == 6  # and the corrupt image
    assert len(train) == 1 and train.records[0].path.endswith("study2_positive/image1.png")
    assert len(train.skipped_images) == 7


def test_a_readme_in_another_encoding_is_not_synthetic(quirky, tmp_path):
    (quirky / "README.txt").write_bytes("Radiographies, données anonymisées".encode("latin-1"))
    assert not load_quiet(quirky, tmp_path / "cache").synthetic


def test_decoding_in_worker_processes_gives_the_same_cache(quirky, tmp_path):
    one = load_quiet(quirky, tmp_path / "one")
    with pytest.warns(UnreadableImageWarning):
        two = load_mura(quirky, size=SIZE, cache_dir=tmp_path / "two", workers=2, progress=False)
    np.testing.assert_array_equal(one.train.images, two.train.images)
    assert two.train.skipped_images == one.train.skipped_images


def test_bad_options_are_clear_errors(quirky, tmp_path):
    with pytest.raises(ValueError, match="resize"):
        load_mura(quirky, resize="crop", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="size"):
        load_mura(quirky, size=0, cache_dir=tmp_path)


@pytest.mark.parametrize("load, owner", [
    (lambda root, **options: load_mura(root, **options), "load_mura"),
    (lambda root, **options: load_split(root, "valid", **options), r"load_split\('valid'\)"),
])
@pytest.mark.parametrize("options, error, message", [
    *[({"progress": flag}, ValueError, f"progress must be True or False, got {flag!r}")
      for flag in ("no", float("nan"), None, 2)],
    *[({name: path}, TypeError, rf"{name} must be a folder path \(str or os.PathLike\), got {re.escape(repr(path))}")
      for name, paths in (("root", (None, 0, True)), ("cache_dir", (0, True, [1, 2]))) for path in paths],
    ({"resize": np.array(["pad", "squash"])}, ValueError, r"resize must be one of \('pad', 'squash'\), got array"),
    ({"resize": ["pad"]}, ValueError, r"resize must be one of \('pad', 'squash'\), got \['pad'\]"),
    ({"workers": 0}, ValueError, "workers must be a positive integer, got 0"),
])
def test_load_mura_and_load_split_check_each_option_before_any_work(quirky, tmp_path, monkeypatch, load, owner,
                                                                      options, error, message):
    monkeypatch.setattr(mura, "read_index", None)  # nothing may be read before the options are checked
    options = {"root": quirky, "size": SIZE, "cache_dir": tmp_path / "cache", "workers": 1, "progress": False,
               **options}
    with pytest.raises(error, match=f"^{owner}: {message}"):
        load(**options)
    assert not (tmp_path / "cache").exists()


def test_the_default_cache_dir_is_still_taken_for_none(quirky, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    load_quiet(quirky, None)
    assert len(list((tmp_path / "xdg" / "minidl" / "mura").glob("*.npy"))) == 2


@pytest.mark.parametrize("path", [None, 0, True])
def test_find_root_and_read_index_refuse_what_is_not_a_path(path):
    with pytest.raises(TypeError, match=rf"^find_root: path must be a folder path \(str or os.PathLike\), "
                                        rf"got {path!r}$"):
        find_root(path)
    with pytest.raises(TypeError, match=r"^read_index: root must be a folder path"):
        read_index(path, "train")


def test_read_index_refuses_a_split_that_is_no_name(quirky):
    for split in ("test", np.array(["train", "valid"])):
        with pytest.raises(ValueError, match=r"^read_index: split must be one of \('train', 'valid'\), got "):
            read_index(quirky, split)


@pytest.mark.parametrize("size", [0, -1, None, 2.5, 1e30, True, "16", np.array([16])])
def test_load_image_refuses_a_size_that_is_not_a_positive_int(tmp_path, size):
    png("L").save(tmp_path / "grey.png")
    with pytest.raises(ValueError, match=rf"^load_image: size must be a positive integer, got "
                                         rf"{re.escape(repr(size))}$"):
        load_image(tmp_path / "grey.png", size)
    assert load_image(tmp_path / "grey.png", np.int64(4)).shape == (4, 4)


# ------------------------------------------------------------------ the synthetic replica
LINE = re.compile(r"^MURA-v1\.1/(train|valid)/XR_[A-Z]+/patient\d{5}/study\d+_(positive|negative)/")


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    parent = tmp_path_factory.mktemp("replica")
    return synthesize(parent, train_patients=40, valid_patients=10, max_size=96, seed=3)


def test_synthesize_writes_the_exact_layout(replica):
    assert replica.name == "MURA-v1.1"
    assert sorted(p.name for p in replica.iterdir()) == [
        "README.txt", "train", "train_image_paths.csv", "train_labeled_studies.csv",
        "valid", "valid_image_paths.csv", "valid_labeled_studies.csv"]
    assert (replica / "README.txt").read_text().startswith("SYNTHETIC")
    patients = {}
    for split in ("train", "valid"):
        image_lines = (replica / f"{split}_image_paths.csv").read_text().splitlines()
        study_lines = (replica / f"{split}_labeled_studies.csv").read_text().splitlines()
        assert all(LINE.match(line) and line.endswith(".png") for line in image_lines)  # first line too: no header
        assert all(LINE.match(line) and re.search(r"/,[01]$", line) for line in study_lines)
        files = sorted(str(p.relative_to(replica.parent)).replace(os.sep, "/")
                       for p in (replica / split).rglob("*") if p.is_file())
        assert files == sorted(image_lines)
        patients[split] = {line.split("/")[3] for line in study_lines}
        for line in study_lines:
            assert line.split("/")[2] in STUDY_TYPES
            assert line.endswith(",1") == ("_positive/" in line)
    assert patients["train"].isdisjoint(patients["valid"])


def test_synthesize_makes_about_40_percent_abnormal_studies_in_varied_pngs(replica):
    for split in ("train", "valid"):
        labels = [int(line[-1]) for line in (replica / f"{split}_labeled_studies.csv").read_text().splitlines()]
        assert abs(np.mean(labels) - 0.4) <= 1 / len(labels)
    modes, shapes = set(), set()
    for file in (replica / "train").rglob("*.png"):
        with Image.open(file) as image:
            modes.add(image.mode)
            shapes.add(image.size)
    assert modes == {"L", "RGB"}
    assert all(max(size) <= 96 for size in shapes) and any(w != h for w, h in shapes) and len(shapes) > 10


def test_synthesize_is_reproducible_and_does_not_overwrite(replica, tmp_path):
    again = synthesize(tmp_path, train_patients=40, valid_patients=10, max_size=96, seed=3)
    for name in ("train_image_paths.csv", "valid_labeled_studies.csv"):
        assert (again / name).read_bytes() == (replica / name).read_bytes()
    study = (again / "train_image_paths.csv").read_text().splitlines()[0][len("MURA-v1.1/"):]
    assert (again / study).read_bytes() == (replica / study).read_bytes()
    assert synthesize(tmp_path, train_patients=40, valid_patients=10, max_size=96, seed=3) == again
    with pytest.raises(FileExistsError, match="MURA-v1.1"):
        synthesize(tmp_path, train_patients=40, valid_patients=10, max_size=96, seed=4)


def test_the_synthetic_sign_is_learnable_but_noisy(replica, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the replica has no unreadable image
        data = load_mura(replica.parent, size=32, cache_dir=tmp_path, workers=1, progress=False)
    assert data.synthetic
    # The bright blob leaves few pixels near the top of the range, since everything else is darker.
    bright = (np.asarray(data.train.images) >= 230).mean(axis=(1, 2))
    threshold = np.median(bright)
    accuracy = np.mean((bright < threshold) == data.train.labels)
    assert 0.7 < accuracy < 0.97


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["OSError", "KeyboardInterrupt"])
def test_synthesize_leaves_nothing_behind_when_it_fails_partway(tmp_path, monkeypatch, error):
    real = mura._synthesize_split
    staged = []

    def fail_after_writing_valid(folder, split, *args):
        real(folder, split, *args)
        staged.append(folder)
        if split == "valid":
            raise error

    monkeypatch.setattr(mura, "_synthesize_split", fail_after_writing_valid)
    (tmp_path / "notes.txt").write_text("not the replica's")
    options = dict(train_patients=2, valid_patients=1, max_size=48)
    with pytest.raises(type(error)) as caught:
        synthesize(tmp_path, **options)
    assert caught.value is error
    # It failed with both splits written into one staging folder beside the replica-to-be.
    assert len(staged) == 2 and staged[0] == staged[1] and staged[0].parent == tmp_path
    assert not staged[0].exists(), f"the staging folder {staged[0]} was left behind"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".MURA-v1.1.lock", "notes.txt"]

    monkeypatch.undo()
    replica = synthesize(tmp_path, **options)  # nothing in the way of another try
    assert sorted(p.name for p in tmp_path.iterdir()) == [".MURA-v1.1.lock", "MURA-v1.1", "notes.txt"]
    assert (replica / "README.txt").read_text().startswith("SYNTHETIC")


def cannot_lock(monkeypatch):
    """Make every lock fail as on a file system without locks (some network file systems)."""
    def flock(descriptor, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(mura.fcntl, "flock", flock)


def test_synthesize_refuses_a_root_it_cannot_write_into(tmp_path, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(mura.os, "access", lambda path, mode: Path(path) != tmp_path and real_access(path, mode))
    with pytest.raises(PermissionError, match=f"synthesize: {re.escape(str(tmp_path))} cannot be written into"):
        synthesize(tmp_path, train_patients=2, valid_patients=1, max_size=48)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
def test_synthesize_removes_a_staging_folder_left_by_a_killed_synthesis(tmp_path):
    stale = tmp_path / ".MURA-v1.1.k1ll3d"
    stale.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it holds the lock: no other synthesis can be writing it
        synthesize(tmp_path, train_patients=2, valid_patients=1, max_size=48)
    assert not stale.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
def test_without_a_lock_synthesize_reports_a_staging_folder_and_keeps_it(tmp_path, monkeypatch):
    cannot_lock(monkeypatch)
    stale = tmp_path / ".MURA-v1.1.k1ll3d"
    stale.mkdir()
    with pytest.warns(UserWarning) as caught:
        synthesize(tmp_path, train_patients=2, valid_patients=1, max_size=48)
    assert [str(w.message) for w in caught] == [
        f"MURA: cannot lock {tmp_path / '.MURA-v1.1.lock'} (No locks available); building the synthetic replica "
        f"{tmp_path / 'MURA-v1.1'} without the lock, so another run must not build it at the same time",
        f"synthesize: {stale} was left by a synthesis that was killed (unless one is running now); delete it"]
    assert all(w.filename == __file__ for w in caught)
    assert stale.exists()  # reported, not removed: another process may be writing it


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
def test_without_a_lock_two_synthesizing_processes_that_race_both_get_the_replica(tmp_path, monkeypatch):
    # The other process finishes first: this one's rename then finds the folder there.
    cannot_lock(monkeypatch)
    real_replace, raced = os.replace, []

    def replace(source, target):
        if not raced:
            raced.append(target)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # it sees this one's staging folder
                synthesize(tmp_path, train_patients=2, valid_patients=1, max_size=48)
        real_replace(source, target)

    monkeypatch.setattr(mura.os, "replace", replace)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cannot lock
        target = synthesize(tmp_path, train_patients=2, valid_patients=1, max_size=48)
    assert raced == [target] and target == tmp_path / "MURA-v1.1"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".MURA-v1.1.lock", "MURA-v1.1"]  # no staging folder
    assert len(read_index(target, "train")) > 0
    # A different replica already there is still an error.
    raced.clear()
    monkeypatch.setattr(mura, "_has_readme", lambda folder, readme: False)
    shutil.rmtree(target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(OSError):
            synthesize(tmp_path, train_patients=2, valid_patients=1, max_size=48)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".MURA-v1.1.lock", "MURA-v1.1"]


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
@pytest.mark.parametrize("progress", [True, False])
def test_a_synthesis_started_while_another_runs_waits_for_it_and_takes_its_replica(tmp_path, progress):
    import fcntl

    code = ("import sys; from minidl.datasets.mura import synthesize; "
            f"print(synthesize(sys.argv[1], train_patients=2, valid_patients=1, max_size=48, progress={progress}), "
            "flush=True)")
    with open(tmp_path / ".MURA-v1.1.lock", "w") as held:  # the other synthesis, running
        fcntl.flock(held, fcntl.LOCK_EX)
        (tmp_path / ".MURA-v1.1.t3mp").mkdir()  # its staging folder
        waiting = subprocess.Popen([sys.executable, "-W", "error", "-c", code, str(tmp_path)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if progress:
            first_line = waiting.stdout.readline()
            assert first_line == (f"MURA: waiting for another process that is building the synthetic replica "
                                  f"{tmp_path / 'MURA-v1.1'}\n")
        else:  # silent, but waiting all the same
            time.sleep(3)
            assert waiting.poll() is None and not (tmp_path / "MURA-v1.1").exists()
        synthesize(tmp_path / "elsewhere", train_patients=2, valid_patients=1, max_size=48)
        os.replace(tmp_path / "elsewhere" / "MURA-v1.1", tmp_path / "MURA-v1.1")  # what the other made
        os.rmdir(tmp_path / ".MURA-v1.1.t3mp")
    stdout, stderr = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, stderr
    assert stdout == f"{tmp_path / 'MURA-v1.1'}\n" and stderr == ""  # no warning of the staging folder either


KILL_THE_PARENT = """
import os, sys, time
from minidl.datasets import mura
def load_image(file, size, resize="pad"):
    open(os.path.join(sys.argv[3], str(os.getpid())), "w").close()
    time.sleep(120)
mura.load_image = load_image  # inherited by the forked workers
mura.load_mura(sys.argv[1], size=16, cache_dir=sys.argv[2], workers=2, progress=False)
"""


def process_state(pid):
    """``(state letter, parent pid)`` from /proc, or None for a process that is gone."""
    try:
        state, parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except (FileNotFoundError, ProcessLookupError):
        return None
    return state, int(parent)


def is_running(pid):
    state = process_state(pid)
    return state is not None and state[0] != "Z"  # a zombie has ended; only its parent's wait is missing


def children(pid):
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and (process_state(p.name) or (None, None))[1] == pid]


@pytest.mark.skipif(sys.platform != "linux", reason="the test's workers inherit a patch by forking; reads /proc")
def test_workers_end_when_the_process_that_started_them_is_killed(quirky, tmp_path):
    # kill -9 or the out-of-memory killer gives the parent no chance to stop them.
    script, started = tmp_path / "kill_the_parent.py", tmp_path / "started"
    script.write_text(KILL_THE_PARENT)
    started.mkdir()
    repo = Path(__file__).parents[2]
    parent = subprocess.Popen([sys.executable, str(script), str(quirky), str(tmp_path / "cache"), str(started)],
                              env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        deadline = time.monotonic() + 60
        while not any(started.iterdir()) and time.monotonic() < deadline:  # a worker is decoding
            time.sleep(0.1)
        workers = children(parent.pid)
        assert len(workers) == 2 and all(is_running(pid) for pid in workers)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while any(is_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if is_running(pid)]
    for pid in left:  # not to leave them behind when the test fails
        os.kill(pid, signal.SIGKILL)
    assert left == []


def test_a_replica_whose_readme_has_windows_line_ends_is_still_recognised(tmp_path):
    # Replicas made on Windows before the README was written with "\n" have "\r\n".
    target = synthesize(tmp_path, train_patients=2, valid_patients=1, max_size=48)
    readme = target / "README.txt"
    readme.write_bytes(readme.read_bytes().replace(b"\n", b"\r\n"))
    assert synthesize(tmp_path, train_patients=2, valid_patients=1, max_size=48) == target


def test_synthesize_draws_one_to_max_images_per_study(tmp_path):
    import csv
    from collections import Counter

    root = synthesize(tmp_path, train_patients=20, valid_patients=2, max_images_per_study=2, min_size=16,
                      max_size=24, seed=0)
    with open(root / "train_image_paths.csv", newline="") as f:
        per_study = Counter(row[0].rsplit("/", 1)[0] for row in csv.reader(f))
    assert set(per_study.values()) == {1, 2}


def test_synthesize_refuses_a_max_size_below_its_min_size(tmp_path):
    with pytest.raises(ValueError, match=r"^synthesize: need ints 2 <= min_size <= max_size <= 8192, got 40 and 20$"):
        synthesize(tmp_path, train_patients=1, valid_patients=1, min_size=40, max_size=20)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ gaps found by mutation testing
def test_a_renamed_dataset_folder_still_finds_its_images(tmp_path):
    # The CSV paths start with MURA-v1.1/, but they are resolved against the folder given, whatever its name.
    original = write_tree(tmp_path / "orig", quirky_splits())
    renamed = original.rename(tmp_path / "mura-download")
    records = read_index(renamed, "valid")
    assert [record.path for record in records] == IMAGE_LINES
    data = load_quiet(renamed, tmp_path / "cache")
    assert data.root == renamed and len(data.valid) == 3


@pytest.mark.parametrize("old, new", [
    pytest.param("/XR_", "/", id="study-type-without-XR_"),
    pytest.param("MURA-v1.1/", "MURA-v1.0/", id="another-top-folder"),
    pytest.param("/study1_", "/extra/study1_", id="a-folder-too-many"),
])
def test_paths_outside_the_layout_in_both_csv_files_are_errors(quirky, old, new):
    # Both files damaged alike, so that studies and images still match one another, and the images exist.
    for name in ("valid_labeled_studies.csv", "valid_image_paths.csv"):
        (quirky / name).write_text((quirky / name).read_text().replace(old, new))
    for line in (quirky / "valid_image_paths.csv").read_text().splitlines():
        file = quirky.joinpath(*line.split("/")[1:])
        if not file.exists():
            file.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(quirky / "valid/XR_FINGER/patient00005/study1_negative/image1.png", file)
    with pytest.raises(ValueError, match="does not follow the layout MURA-v1.1/valid/XR_<TYPE>/"):
        read_index(quirky, "valid")


def test_an_image_far_wider_than_tall_keeps_a_row_when_padded(tmp_path):
    png("L", height=1, width=60).save(tmp_path / "strip.png")  # 1 x 60 -> 0.27 x 16: rounded up to one row
    padded = load_image(tmp_path / "strip.png", SIZE)
    assert padded.shape == (SIZE, SIZE)
    assert np.flatnonzero(padded.any(axis=1)).size == 1
    assert padded.max() == 255


def test_load_image_refuses_an_unknown_resize_mode(tmp_path):
    png("L").save(tmp_path / "grey.png")
    with pytest.raises(ValueError, match="resize must be one of"):
        load_image(tmp_path / "grey.png", SIZE, resize="crop")
    with pytest.raises(ValueError, match=r"^load_image: resize must be one of \('pad', 'squash'\), got array"):
        load_image(tmp_path / "grey.png", SIZE, resize=np.array(["pad", "squash"]))


def test_a_file_pillow_rejects_with_a_value_error_is_left_out_as_unreadable(quirky, tmp_path):
    # A PGM header with a maximum grey value of 0, under a .png name: Pillow raises ValueError.
    victim = quirky / "valid/XR_FINGER/patient00005/study1_negative/image2.png"
    victim.write_bytes(b"P5\n4 4\n0\n" + bytes(16))
    with pytest.raises(ValueError), Image.open(victim) as image:
        image.load()
    with pytest.warns(UnreadableImageWarning, match="image2.png .*ValueError"):
        valid = load_split(quirky, "valid", size=SIZE, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert valid.skipped_images == [IMAGE_LINES[2]] and len(valid) == 2


def test_datasets_at_two_places_keep_their_own_caches(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = write_tree(tmp_path / "one", quirky_splits())
    second = write_tree(tmp_path / "two", quirky_splits())
    options = dict(size=SIZE, cache_dir=cache, workers=1, progress=False, mean=100.0, std=50.0)
    load_split(first, "valid", **options)
    load_split(second, "valid", **options)
    assert len(cache_files(cache)) == 4
    forbid_decoding(monkeypatch)
    load_split(first, "valid", **options)  # not displaced by the other dataset's cache
    load_split(second, "valid", **options)


def test_the_cache_is_rebuilt_when_the_image_csv_changes(quirky, tmp_path, monkeypatch):
    # The key holds the bytes of both CSV files: a change that lists the same images still rebuilds.
    cache = tmp_path / "cache"
    options = dict(size=SIZE, cache_dir=cache, workers=1, progress=False, mean=100.0, std=50.0)
    load_split(quirky, "valid", **options)
    images_csv = quirky / "valid_image_paths.csv"
    images_csv.write_text(images_csv.read_text() + "\n")
    calls = count_decoding(monkeypatch)
    load_split(quirky, "valid", **options)
    assert len(calls) == 3


def test_the_cache_is_rebuilt_when_an_image_changes_size_but_keeps_its_modification_time(quirky, tmp_path,
                                                                                           monkeypatch):
    # As a copy that keeps times (cp -p, rsync -t) of another version of the file would leave it.
    cache = tmp_path / "cache"
    options = dict(size=SIZE, cache_dir=cache, workers=1, progress=False, mean=100.0, std=50.0)
    before = np.array(load_split(quirky, "valid", **options).images)
    image = quirky / "valid/XR_WRIST/patient00004/study1_positive/image1.png"
    stat = image.stat()
    png("L", height=30, width=10).save(image)  # another picture, of another byte size
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert image.stat().st_size != stat.st_size and image.stat().st_mtime_ns == stat.st_mtime_ns
    calls = count_decoding(monkeypatch)
    after = load_split(quirky, "valid", **options)
    assert len(calls) == 3
    assert not np.array_equal(after.images[0], before[0])


def test_a_disk_that_refuses_the_allocation_is_full_even_when_free_space_looks_enough(quirky, tmp_path, monkeypatch):
    # A quota, or blocks reserved for root, can make posix_fallocate fail while statvfs reports free space.
    def posix_fallocate(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mura.os, "posix_fallocate", posix_fallocate, raising=False)
    monkeypatch.setattr(mura.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 0, 10**12))
    calls = count_decoding(monkeypatch)
    with pytest.raises(OSError, match="the train cache needs") as err:
        load_mura(quirky, size=SIZE, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert err.value.errno == errno.ENOSPC
    assert calls == [] and cache_files(tmp_path / "cache") == []


def test_the_index_is_written_only_once_the_image_array_is_in_place(quirky, tmp_path, monkeypatch):
    # The .json marks a cache as complete: when putting the .npy in place fails, no .json may be there.
    cache = tmp_path / "cache"
    real_replace = os.replace

    def replace(source, target):
        if str(target).endswith(".npy"):
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="Input/output error"):
        load_split(quirky, "valid", size=SIZE, cache_dir=cache, workers=1, progress=False, mean=100.0, std=50.0)
    assert not list(cache.glob("*.json"))


def test_training_augmentation_is_the_papers_flips_and_rotations_filled_with_black(quirky, tmp_path):
    # Flips, rotations of up to 30 degrees, and black (raw 0) rotated in, before normalisation; drawn as
    # ArrayBatches documents: epoch 0 takes its order, then each batch's augmentation, from a generator seeded (seed, 0).
    from minidl.data import random_flip_rotate

    data = load_quiet(quirky, tmp_path / "cache", resize="squash")  # squashed images are lit up to their corners
    train = data.train
    n = len(train)
    ((x, y),) = list(train.batches(batch_size=n, seed=5))
    rng = np.random.default_rng([5, 0])
    rng.permutation(n)
    expected = random_flip_rotate(np.asarray(train.images, dtype=np.float32), rng, flip=True, max_degrees=30.0,
                                  fill=0.0)
    np.testing.assert_allclose(x[..., 0], (expected - data.mean) / data.std, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(y, train.labels)


@pytest.mark.parametrize("fraction", [0.25, 0.99])
def test_synthesize_makes_the_rounded_share_of_abnormal_studies(tmp_path, fraction):
    root = synthesize(tmp_path, train_patients=12, valid_patients=5, max_size=48, abnormal_fraction=fraction, seed=1)
    for split in SPLITS:
        labels = [int(line[-1]) for line in (root / f"{split}_labeled_studies.csv").read_text().splitlines()]
        assert sum(labels) == round(fraction * len(labels))


def test_the_synthetic_sign_follows_sign_noise(tmp_path):
    # sign_noise=1: the bright blob is on every image of a normal study and on none of an abnormal one.
    synthesize(tmp_path / "inverted", train_patients=30, valid_patients=2, max_size=64, sign_noise=1.0, seed=2)
    synthesize(tmp_path / "clean", train_patients=30, valid_patients=2, max_size=64, sign_noise=0.0, seed=2)
    brightness = {}
    for name in ("inverted", "clean"):
        train = load_split(tmp_path / name, "train", size=32, cache_dir=tmp_path / "cache", workers=1, progress=False)
        bright = (np.asarray(train.images) >= 230).mean(axis=(1, 2))
        brightness[name] = (bright[train.labels == 1].mean(), bright[train.labels == 0].mean())
    # The blob takes the top of the stretched range, leaving the bone below it: fewer bright pixels with the sign.
    abnormal, normal = brightness["clean"]
    assert normal > 2 * abnormal
    abnormal, normal = brightness["inverted"]
    assert abnormal > 2 * normal


def test_synthesize_draws_one_to_max_studies_per_patient_all_of_one_type(tmp_path):
    from collections import defaultdict

    root = synthesize(tmp_path, train_patients=20, valid_patients=2, max_studies_per_patient=2, min_size=16,
                      max_size=24, seed=0)
    types = defaultdict(list)  # patient -> the study type of each of its studies
    for line in (root / "train_labeled_studies.csv").read_text().splitlines():
        _, _, study_type, patient, _ = line.split("/", 4)
        types[patient].append(study_type)
    assert {len(studies) for studies in types.values()} == {1, 2}
    assert all(len(set(studies)) == 1 for studies in types.values())


SIZES = r"need ints 2 <= min_size <= max_size <= 8192, got "


@pytest.mark.parametrize("options, message", [
    ({"min_size": 1, "max_size": 20}, SIZES + "1 and 20"),
    ({"min_size": 2.5}, SIZES + "2.5 and 512"),
    ({"max_size": 1e30}, SIZES + "48 and 1e\\+30"),
    ({"max_size": 8193}, SIZES + "48 and 8193"),
    ({"max_size": np.array([64])}, SIZES + r"48 and array\(\[64\]\)"),
    *[({name: value}, f"{name} must be a positive integer, got {re.escape(repr(value))}")
      for name in ("train_patients", "valid_patients", "max_studies_per_patient", "max_images_per_study")
      for value in (0, -1, 2.5, True, None, np.array([2]))],
    *[({name: value}, f"{name} must be a number in \\[0, 1\\], got {re.escape(repr(value))}")
      for name in ("abnormal_fraction", "sign_noise")
      for value in (-1, 2.5, 1e30, True, float("nan"), float("inf"), "0.5", np.array([0.5]))],
    *[({"seed": value}, f"seed must be None or a non-negative int, got {re.escape(repr(value))}")
      for value in (-1, 2.5, True, "x")],
    *[({"progress": value}, f"progress must be True or False, got {re.escape(repr(value))}")
      for value in ("no", None, 2)],
])
def test_synthesize_refuses_arguments_that_cannot_make_a_replica(tmp_path, options, message):
    with pytest.raises(ValueError, match="^synthesize: " + message + "$"):
        synthesize(tmp_path, **{"train_patients": 1, "valid_patients": 1, **options})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("root", [None, 0, True])
def test_synthesize_refuses_a_root_that_is_not_a_path(root):
    with pytest.raises(TypeError, match=rf"^synthesize: root must be a folder path \(str or os.PathLike\), "
                                        rf"got {root!r}$"):
        synthesize(root)


def test_synthesize_checks_its_arguments_before_it_looks_for_a_replica(replica):
    # The replica of these arguments exists: nonsense beside them is refused, not answered with it or FileExistsError.
    with pytest.raises(ValueError, match="^synthesize: abnormal_fraction must be a number in"):
        synthesize(replica.parent, train_patients=40, valid_patients=10, max_size=96, seed=3, abnormal_fraction=2.5)


def test_synthesize_takes_numpy_numbers_and_writes_them_in_its_readme_as_python_ones(tmp_path):
    plain = synthesize(tmp_path / "plain", train_patients=2, valid_patients=1, max_size=24, min_size=16,
                       abnormal_fraction=0.5, sign_noise=0, seed=4)
    numpy_ = synthesize(tmp_path / "numpy", train_patients=np.int64(2), valid_patients=np.int32(1),
                        max_size=np.int64(24), min_size=16, abnormal_fraction=np.float32(0.5), sign_noise=np.int64(0),
                        seed=np.uint8(4))
    assert (plain / "README.txt").read_text() == (numpy_ / "README.txt").read_text()
    assert '"sign_noise": 0,' in (plain / "README.txt").read_text()  # as before: replicas made then are found


def test_synthesize_uses_all_seven_study_types(replica):
    lines = (replica / "train_labeled_studies.csv").read_text().splitlines()
    assert {line.split("/")[2] for line in lines} == set(STUDY_TYPES)


def test_given_statistics_are_kept_as_python_floats_whatever_their_type(quirky, tmp_path):
    # run.json keeps them: a NumPy float32 or a 0-d array would not go through json.dumps.
    valid = load_split(quirky, "valid", size=SIZE, cache_dir=tmp_path / "cache", workers=1, progress=False,
                       mean=np.float32(100.0), std=np.array(50.0))
    assert (type(valid.mean), type(valid.std)) == (float, float)
    assert (valid.mean, valid.std) == (100.0, 50.0)
