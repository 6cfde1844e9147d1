"""minidl.utils: the argument checks the modules share, and atomic writes."""
import errno
import os
import stat

import numpy as np
import pytest

from minidl import utils
from minidl.utils import atomic_path, check_choice, check_flag, file_path, finite_float, float_dtype


@pytest.mark.parametrize("value, expected", [
    (0.5, 0.5), (3, 3.0), (np.float32(0.25), 0.25), (np.int64(-2), -2.0), (np.array(1.5), 1.5),
])
def test_finite_float_takes_one_real_number(value, expected):
    assert finite_float(value) == expected and type(finite_float(value)) is float


class OneElementArray:
    """A 1-d array of one number that float() accepts, as NumPy's did before 2.4."""

    ndim = 1
    dtype = np.dtype(np.float64)

    def __float__(self):
        return 0.5


@pytest.mark.parametrize("value", [
    True, np.True_, np.array(False), "0.5", b"1", np.array("1"), np.complex128(1.0), None,
    float("nan"), float("inf"), np.array([0.5]), np.array([[2.0]]), OneElementArray(),
], ids=repr)
def test_finite_float_refuses_what_is_not_one_finite_real_number(value):
    assert finite_float(value) is None


@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), (np.True_, True), (1, True), (np.int64(0), False), (np.array(True), True),
])
def test_check_flag_takes_bools_and_0_and_1_as_a_bool(value, expected):
    assert check_flag("owner", "name", value) is expected


def test_check_flag_takes_a_0_d_array_of_any_array_module():
    class ZeroD:
        """What a 0-d CuPy array offers here: ndim 0 and item() (it is no numpy.ndarray)."""

        ndim = 0

        def item(self):
            return True

    assert check_flag("owner", "name", ZeroD()) is True


@pytest.mark.parametrize("value", ["no", "", None, 2, 1.0, np.array([True]), [True]], ids=repr)
def test_check_flag_refuses_what_is_not_a_flag(value):
    with pytest.raises(ValueError) as err:
        check_flag("owner", "name", value)
    assert str(err.value) == f"owner: name must be True or False, got {value!r}"


@pytest.mark.parametrize("value, ok", [(0, True), (2, True), (np.int64(1), True), (True, True), (3, False),
                                       (1.0, False), ("1", False), (None, False)])
def test_check_choice_takes_an_integer_among_the_choices(value, ok):
    if ok:
        assert check_choice("owner", "verbose", value, (0, 1, 2)) == value
    else:
        with pytest.raises(ValueError) as err:
            check_choice("owner", "verbose", value, (0, 1, 2))
        assert str(err.value) == f"owner: verbose must be one of 0, 1, 2, got {value!r}"


def test_float_dtype_takes_float32_and_float64_only():
    assert float_dtype("owner", "float32") == np.float32 and float_dtype("owner", np.float64) == np.float64
    for dtype in ("float16", np.int32, "longdouble"):
        with pytest.raises(ValueError, match=f"^owner: dtype must be float32 or float64, got {np.dtype(dtype)}$"):
            float_dtype("owner", dtype)
    for dtype in (None, "foo", object()):  # NumPy reads None as float64; "foo" is its TypeError
        with pytest.raises(ValueError) as err:
            float_dtype("owner", dtype)
        assert str(err.value) == f"owner: dtype must be float32 or float64, got {dtype!r}"


def test_file_path_takes_strings_and_path_likes_but_not_folders(tmp_path):
    assert file_path("owner", "path", tmp_path / "a.csv") == str(tmp_path / "a.csv")
    assert file_path("owner", "path", "b.csv") == "b.csv"
    for bad in (None, 3, b"c.csv"):
        with pytest.raises(TypeError) as err:
            file_path("owner", "path", bad)
        assert str(err.value) == f"owner: path must be a file path (str or os.PathLike), got {bad!r}"
    for bad, what in (("", "empty"), (tmp_path, "a folder"), ("not-yet/", "a folder"), ("not-yet/.", "a folder"),
                      ("a.npz/..", "a folder")):
        with pytest.raises(ValueError) as err:
            file_path("owner", "path", bad)
        assert str(err.value) == f"owner: path {str(bad)!r} is {what}; give the path of a file"


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_atomic_path_leaves_the_file_and_no_temporary_when_the_block_raises(tmp_path, error):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(type(error)):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise error
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits and symbolic links")
def test_atomic_path_keeps_a_replaced_files_permissions_and_a_links_target(tmp_path):
    private = tmp_path / "private.bin"
    private.write_bytes(b"old")
    private.chmod(0o600)
    link = tmp_path / "latest.bin"
    link.symlink_to(private)
    with atomic_path(link) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert link.is_symlink() and os.readlink(link) == str(private)
    assert private.read_bytes() == b"new"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["latest.bin", "private.bin"]


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_atomic_path_follows_a_relative_link_from_the_links_folder_not_the_working_one(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    (tmp_path / "private.bin").write_bytes(b"old")
    link = tmp_path / "latest.bin"
    link.symlink_to("private.bin")  # relative: to the file beside the link
    with atomic_path(link) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert link.is_symlink() and os.readlink(link) == "private.bin"
    assert (tmp_path / "private.bin").read_bytes() == b"new"
    assert os.listdir(tmp_path / "elsewhere") == []


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_atomic_path_refuses_a_loop_of_links_and_leaves_it_as_it_was(tmp_path):
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    first.symlink_to("second.bin")
    second.symlink_to("first.bin")
    with pytest.raises(OSError, match="first.bin") as raised:
        with atomic_path(first):
            pass
    assert raised.value.errno == errno.ELOOP
    assert os.readlink(first) == "second.bin" and os.readlink(second) == "first.bin"
    assert sorted(os.listdir(tmp_path)) == ["first.bin", "second.bin"]


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_atomic_path_names_the_link_it_was_given_when_it_leads_into_a_loop(tmp_path):
    first, second, into = tmp_path / "first.bin", tmp_path / "second.bin", tmp_path / "into.bin"
    first.symlink_to("second.bin")
    second.symlink_to("first.bin")
    into.symlink_to("first.bin")
    message = r"^\[Errno \d+\] cannot write through .*into\.bin: .*: '.*into\.bin'$"
    with pytest.raises(OSError, match=message) as raised:
        with atomic_path(into):
            pass
    assert raised.value.errno == errno.ELOOP and raised.value.filename == str(into)
    assert sorted(os.listdir(tmp_path)) == ["first.bin", "into.bin", "second.bin"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_path_gives_a_read_only_files_mode_only_after_the_block_has_written(tmp_path):
    # A user who is not root could not write into a temporary file made read-only first.
    path = tmp_path / "read-only.bin"
    path.write_bytes(b"old")
    path.chmod(0o444)
    with atomic_path(path) as tmp:
        assert os.stat(tmp).st_mode & stat.S_IWUSR
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o444


def test_atomic_path_makes_missing_folders(tmp_path):
    with atomic_path(tmp_path / "new" / "g.bin") as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert (tmp_path / "new" / "g.bin").read_bytes() == b"new"


def test_atomic_path_syncs_the_file_to_disk_before_renaming_it(tmp_path, monkeypatch):
    calls, real_fsync, real_replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: calls.append("replace") or real_replace(a, b))
    path = tmp_path / "f.bin"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new")
        assert calls == []
    assert calls == ["fsync", "replace"] and path.read_bytes() == b"new"


def test_atomic_path_never_takes_over_another_writers_temporary_file(tmp_path, monkeypatch):
    tokens = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr(utils.secrets, "token_hex", lambda n: next(tokens))
    other = tmp_path / ".f.bin.aaaaaaaaaaaa.tmp"
    other.write_bytes(b"someone else's")
    with atomic_path(tmp_path / "f.bin") as tmp:
        assert tmp.endswith(".f.bin.bbbbbbbbbbbb.tmp")
        with open(tmp, "wb") as f:
            f.write(b"mine")
    assert other.read_bytes() == b"someone else's" and (tmp_path / "f.bin").read_bytes() == b"mine"
