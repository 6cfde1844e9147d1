"""The documentation runs: every ```python block of README.md and docs/**/*.md, in order.

Each Markdown file is one test case. Its ```python blocks run one after the
other in a single namespace, as a reader would paste them into one session,
with the working directory (and ``tempfile``'s folder) set to a fresh
temporary directory, so files the docs write land there. Blocks with any
other tag (```text, ```bash, ```json) or none are shown, not run.

A failing block is reported by file, block number and line; its traceback
points at the Markdown file itself, because each block is compiled with the
file's name and its own line numbers.

A second check per file: every relative link (``[text](path)``) points at a
file or folder that exists in the repository.
"""
import ast
import importlib
import inspect
import pkgutil
import re
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import numpy
import pytest

ROOT = Path(__file__).resolve().parent.parent

# An opening fence: up to 3 spaces of indentation (more inside list items is
# allowed too), then ``` or ~~~ (3 or more), then the info string.
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
# [text](target) and ![alt](target); the target ends at whitespace or ")".
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files():
    files = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
    return [f for f in files if f.is_file()]


def code_blocks(text):
    """``(language, first line number, code)`` for every fenced block of ``text``, in order.

    The line number is that of the block's first code line (1-based). Code
    inside an indented fence (a list item) is dedented by the fence's indent.
    """
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        info = match["info"].strip().split()
        language = info[0].lower() if info else ""
        body, j = [], i + 1
        while j < len(lines):
            closing = lines[j].strip()
            if closing.startswith(fence[0] * len(fence)) and set(closing) == {fence[0]}:
                break
            line = lines[j]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            j += 1
        else:
            raise ValueError(f"unclosed {fence} fence opened at line {i + 1}")
        blocks.append((language, i + 2, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def python_blocks(path):
    return [(line, code) for language, line, code in code_blocks(path.read_text(encoding="utf-8"))
            if language == "python"]


def relative(path):
    return path.relative_to(ROOT).as_posix()


FILES = markdown_files()


@pytest.fixture
def docs_session(tmp_path, monkeypatch):
    """A fresh working directory, the repository importable, Agg plots, and the CPU backend."""
    import minidl.backend
    from minidl.layers.base import LAYER_CLASSES

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    layer_classes = dict(LAYER_CLASSES)
    yield tmp_path
    # Custom layers defined by a page must not leak into other tests, nor a backend choice.
    LAYER_CLASSES.clear()
    LAYER_CLASSES.update(layer_classes)
    minidl.backend.set_backend("numpy")


def test_docs_exist():
    """The pages that the README and index link to are there, and they hold runnable examples."""
    names = {relative(f) for f in FILES}
    for page in ("docs/index.md", "docs/tutorial.md", "docs/custom_layer.md", "docs/gpu.md", "docs/mura.md",
                 "docs/api.md"):
        assert page in names, f"{page} is missing"
    for page in ("docs/index.md", "docs/tutorial.md", "docs/custom_layer.md"):
        assert python_blocks(ROOT / page), f"{page} has no ```python block"


@pytest.mark.parametrize("path", FILES, ids=relative)
def test_python_blocks_run(path, docs_session):
    namespace = {"__name__": "__main__"}
    blocks = python_blocks(path)
    for number, (line, code) in enumerate(blocks, start=1):
        # Pad with blank lines so that line numbers in tracebacks are the Markdown file's.
        source = "\n" * (line - 1) + code
        failure = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                exec(compile(source, str(path), "exec"), namespace)
        except (Exception, SystemExit) as error:  # noqa: BLE001 - report anything a block raises
            last = line + code.count("\n") - 1
            details = "".join(traceback.format_exception(type(error), error, error.__traceback__.tb_next))
            failure = (f"{relative(path)}: python block {number} of {len(blocks)} (lines {line}-{last}) "
                       f"raised {type(error).__name__}: {error}\n\n{details}")
        if failure is not None:
            pytest.fail(failure, pytrace=False)


@pytest.mark.parametrize("path", FILES, ids=relative)
def test_relative_links_resolve(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    # Links inside code blocks are code, not links: blank those lines out.
    for _, first, code in code_blocks("\n".join(lines)):
        for k in range(first - 1, first - 1 + code.count("\n")):
            lines[k] = ""
    broken = []
    for number, line in enumerate(lines, start=1):
        line = re.sub(r"`[^`]*`", "", line)  # nor inside inline code
        for match in LINK.finditer(line):
            target = match["target"]
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # http:, https:, mailto: and in-page anchors
            if not (path.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{target} (line {number})")
    assert not broken, f"{relative(path)} links to missing files: " + ", ".join(broken)


def test_mura_guide_lists_every_option_of_the_training_script(capsys, monkeypatch):
    """docs/mura.md's option table names exactly the options that examples/train_mura.py accepts."""
    import importlib.util

    monkeypatch.setattr(sys, "path", list(sys.path))  # the script prepends the repository to it
    spec = importlib.util.spec_from_file_location("train_mura_for_docs", ROOT / "examples" / "train_mura.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit):
        script.parse_args(["--help"])
    option_lines = [line for line in capsys.readouterr().out.splitlines() if re.match(r"^  -", line)]
    # An option line is "  --name METAVAR, --other  description": keep what precedes the description.
    invocations = [line.strip().split("  ")[0] for line in option_lines]
    accepted = {o for text in invocations for o in re.findall(r"--[a-z][a-z-]*", text)} - {"--help"}
    guide = (ROOT / "docs" / "mura.md").read_text(encoding="utf-8")
    table = [line for line in guide.splitlines() if line.startswith("| `--")]
    documented = {o for line in table for o in re.findall(r"--[a-z][a-z-]*", line.split("|")[1])}
    assert accepted == documented, (
        f"docs/mura.md's option table is out of date: undocumented {sorted(accepted - documented)}, "
        f"no longer accepted {sorted(documented - accepted)}"
    )


# The names of DESIGN.md's "Public names" block (its import lines), copied here
# because the design notes are not part of the repository.
DESIGN_PUBLIC_NAMES = (
    "minidl", "Sequential", "set_backend", "Layer",
    "Dense", "Conv2D", "MaxPool2D", "AvgPool2D", "Flatten", "ReLU", "Softmax", "Dropout",
    "CrossEntropy", "SGD", "RMSProp", "Adam", "initializers", "metrics", "gradcheck",
)


def test_api_reference_names_every_public_name():
    """docs/api.md mentions each public name as inline code: `name`, `name(...)` or `minidl.name`."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    missing = [name for name in DESIGN_PUBLIC_NAMES
               if not re.search(r"`(?:minidl\.)?" + re.escape(name) + r"(?:\([^`]*\))?`", text)]
    assert not missing, f"docs/api.md does not mention {missing} as `name`"


def public_names():
    """``module.name`` (and ``module.Class.member``) for what each minidl module defines without a leading _."""
    import minidl

    for info in pkgutil.walk_packages(minidl.__path__, "minidl."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            defined_here = getattr(value, "__module__", None) == module.__name__
            if name.startswith("_") or not (name.isupper() or (defined_here and callable(value))):
                continue
            yield f"{module.__name__}.{name}", name
            if inspect.isclass(value):
                yield from ((f"{module.__name__}.{name}.{member}", member)
                            for member in vars(value) if not member.startswith("_"))


def test_api_reference_mentions_every_public_name_of_every_module():
    """What the package defines without a leading underscore appears in docs/api.md's inline code."""
    text = re.sub(r"```.*?```", "", (ROOT / "docs" / "api.md").read_text(encoding="utf-8"), flags=re.S)
    inline_code = set(re.findall(r"\w+", " ".join(re.findall(r"`([^`\n]+)`", text))))
    missing = [where for where, name in public_names() if name not in inline_code]
    assert not missing, f"docs/api.md does not mention {missing}; document them or give them a leading _"


# A definition in docs/api.md: a list item, table cell or line that opens with `name(parameters)`.
DEFINITION = re.compile(r"^(?:- |\| )?`(?P<name>(?:[A-Z]\w*\.)?\w+)\((?P<params>[^`]*)\)(?: -> [^`]*)?`", re.M)


def documented_signatures():
    """``(module, name, parameters text)`` for every definition line of docs/api.md, by its ``## `module` `` section."""
    sections = re.split(r"^## `(minidl[\w.]*)`", (ROOT / "docs" / "api.md").read_text(encoding="utf-8"), flags=re.M)
    for module_name, body in zip(sections[1::2], sections[2::2]):
        for match in DEFINITION.finditer(body):
            yield module_name, match["name"], match["params"]


def implementations(module, name):
    """What ``name`` may mean in ``module``: a name or ``Class.member`` of it, else that method of its classes."""
    value = module
    try:
        for part in name.split("."):
            value = getattr(value, part)
        return [value]
    except AttributeError:
        classes = [c for c in vars(module).values() if inspect.isclass(c) and c.__module__.startswith("minidl")]
        return [vars(c)[name] for c in classes if callable(vars(c).get(name))]


def parameters_of(params_text):
    """``[(name, default text or None)]`` of a documented parameter list, such as ``x, *, seed=0``."""
    args = ast.parse(f"def f({params_text}): pass").body[0].args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    named = [(a.arg, d) for a, d in zip(positional, defaults)]
    named += [(args.vararg.arg, None)] if args.vararg else []
    named += list(zip((a.arg for a in args.kwonlyargs), args.kw_defaults))
    return [(name, None if d is None else ast.unparse(d)) for name, d in named]


def matches(function, documented):
    """Whether ``function``'s parameters (``self`` aside) have the documented names, order and defaults.

    A layer's constructor may leave out its last parameter, ``name`` (api.md says once
    that every layer takes ``name=None``).
    """
    from minidl.layers import Layer

    actual = [p for p in inspect.signature(function).parameters.values() if p.name != "self"]
    if (inspect.isclass(function) and issubclass(function, Layer) and actual and actual[-1].name == "name"
            and "name" not in dict(documented)):
        actual = actual[:-1]
    if [p.name for p in actual] != [name for name, _ in documented]:
        return False
    for parameter, (_, default) in zip(actual, documented):
        if (default is None) != (parameter.default is inspect.Parameter.empty):
            return False
        if default is not None and eval(default, {"numpy": numpy}) != parameter.default:
            return False
    return True


def test_api_reference_signatures_match_the_code():
    """Each definition in docs/api.md has the parameters, order and defaults the code has."""
    wrong, checked = [], 0
    for module_name, name, params in documented_signatures():
        candidates = [f for f in implementations(importlib.import_module(module_name), name) if callable(f)]
        if not candidates:
            continue  # prose about something else, e.g. a user's own function
        checked += 1
        if not any(matches(f, parameters_of(params)) for f in candidates):
            wrong.append(f"{module_name}: {name}({params})")
    assert not wrong, "docs/api.md gives signatures the code does not have:\n" + "\n".join(wrong)
    assert checked > 100  # the definitions were found (a change of format would check nothing)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
