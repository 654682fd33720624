"""Generates the documentation pages that repeat text kept elsewhere, so that each text has one source.

Called by conf.py on every build; writes docs/_generated/ (ignored by git):
- ``getting-started.md``: the README's "Quick start" (its two commands) and "Development" sections;
- ``capabilities/NN-<name>.md``: one page per "###" section of the README's "Usage" (the snippets that
  tests/test_readme.py runs), each followed by links to its API reference;
- ``examples.md``: examples/README.md, with its figures (examples/figures/);
- ``benchmarks.md``: benchmarks/RESULTS.md;
- ``api/<package>.md``: every name in each package's ``__all__``, documented once (on the deepest
  package that exports it) with autodoc; other packages that export it link to it.
"""

from __future__ import annotations

import importlib
import inspect
import re
import shutil
import types
from pathlib import Path

# Packages with an API page, in reading order. A module listed in a package's __all__ gets a page too.
PACKAGES = [
    "jaxdl.optim",
    "jaxdl.losses",
    "jaxdl.nn",
    "jaxdl.nn.kan",
    "jaxdl.nn.kan.linen",
    "jaxdl.nn.ssm",
    "jaxdl.nn.sdm",
    "jaxdl.probes",
    "jaxdl.data",
    "jaxdl.checkpoint",
    "jaxdl.parallel",
]


def _sections(markdown: str, level: int) -> list[tuple[str, str]]:
    """(title, body) of each heading of exactly ``level`` #'s, outside code blocks."""
    marker = "#" * level + " "
    sections: list[tuple[str, str]] = []
    in_code = False
    for line in markdown.splitlines(keepends=True):
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and line.startswith(marker):
            sections.append((line[len(marker) :].strip(), ""))
        elif sections:
            title, body = sections[-1]
            if not in_code and re.match(rf"#{{1,{level - 1}}} ", line):
                sections.append(("", ""))  # a higher heading ends the section
                continue
            sections[-1] = (title, body + line)
    return [(t, b) for t, b in sections if t]


def _section(markdown: str, title: str, level: int = 2) -> str:
    for t, body in _sections(markdown, level):
        if t == title:
            return body
    raise KeyError(f"no section {'#' * level} {title!r}")


def _promote(markdown: str, levels: int) -> str:
    """Headings ``levels`` steps up (``###`` -> ``#`` for 2), outside code blocks."""
    out, in_code = [], False
    for line in markdown.splitlines(keepends=True):
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and re.match(rf"#{{{levels + 2},}} ", line):
            line = line[levels:]
        out.append(line)
    return "".join(out)


def _relink(markdown: str, base: str) -> str:
    """Repository-relative links (``[x](examples/x.py)``) become code spans: the site has no such pages.

    Images stay images, with paths from docs/_generated/ to the file in the repository.
    """
    markdown = re.sub(
        r"!\[([^\]]*)\]\((?![a-z]+://)([^)\s]+)\)",
        lambda m: f"![{m.group(1)}](../../{base}{m.group(2)})",
        markdown,
    )

    def replace(match: re.Match) -> str:
        text, target = match.group(1), match.group(2)
        if re.match(r"[a-z]+://|#", target):
            return match.group(0)
        return f"{text} (`{base}{target}`)" if text.strip("`") != target else f"`{base}{target}`"

    return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", replace, markdown)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _public_names(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    # No __all__ yet: the public names defined inside this package.
    return sorted(
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (
            (isinstance(obj, types.ModuleType) and obj.__name__.startswith(module.__name__ + "."))
            or getattr(obj, "__module__", "").startswith(module.__name__)
        )
    )


def _api_pages(out: Path) -> list[str]:
    packages = list(PACKAGES)
    exports: dict[str, list[tuple[str, str]]] = {}  # package -> [(name, kind)]
    owner: dict[int, str] = {}  # id(object) -> the deepest package exporting it
    index = 0
    while index < len(packages):
        package = packages[index]
        index += 1
        module = importlib.import_module(package)
        exports[package] = []
        for name in _public_names(module):
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType):
                if obj.__name__ not in packages and obj.__name__.startswith("jaxdl."):
                    packages.append(obj.__name__)
                exports[package].append((obj.__name__, "module"))
                continue
            kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else "data"
            exports[package].append((name, kind))
            if kind != "data":
                previous = owner.get(id(obj))
                if previous is None or previous.count(".") < package.count("."):
                    owner[id(obj)] = package
    pages = []
    for package in packages:
        module = importlib.import_module(package)
        lines = [
            f"# `{package}`\n",
            "```{eval-rst}",
            f".. automodule:: {package}",
            "   :no-members:",
            "```\n",
        ]
        for name, kind in exports[package]:
            if kind == "module":
                lines.append(f"- module [`{name}`]({name}.md)")
                continue
            obj = getattr(module, name)
            home = owner.get(id(obj), package) if kind != "data" else package
            if home != package:
                lines.append(f"- `{package}.{name}`: see {{py:obj}}`{home}.{name}`")
                continue
            directive = {"class": "autoclass", "function": "autofunction", "data": "autodata"}[kind]
            options = ["   :members:"] if kind == "class" else ["   :annotation:"] if kind == "data" else []
            lines += ["```{eval-rst}", f".. {directive}:: {package}.{name}", *options, "```\n"]
        (out / "api" / f"{package}.md").write_text("\n".join(lines) + "\n")
        pages.append(f"api/{package}")
    return pages


def write_all(docs: Path) -> None:
    root = docs.parent
    out = docs / "_generated"
    shutil.rmtree(out, ignore_errors=True)  # no stale pages from an earlier build
    (out / "capabilities").mkdir(parents=True, exist_ok=True)
    (out / "api").mkdir(parents=True, exist_ok=True)
    readme = (root / "README.md").read_text()

    getting_started = ["# Getting started\n", _promote(_relink(_section(readme, "Quick start"), ""), 1)]
    try:
        getting_started += ["## Development\n", _promote(_relink(_section(readme, "Development"), ""), 1)]
    except KeyError:
        pass
    (out / "getting-started.md").write_text("\n".join(getting_started))

    capability_pages = []
    for number, (title, body) in enumerate(_sections(_section(readme, "Usage"), 3), start=1):
        modules = re.findall(r"`(jaxdl(?:\.[a-z_]+)*)`", title)
        links = [f"- API reference: [`{m}`](../api/{m}.md)" for m in modules if m in PACKAGES]
        name = f"{number:02d}-{_slug(title)}"
        (out / "capabilities" / f"{name}.md").write_text(
            f"# {title}\n\n{_promote(_relink(body, ''), 2)}\n" + "\n".join(links) + "\n"
        )
        capability_pages.append(f"capabilities/{name}")

    (out / "examples.md").write_text(_relink((root / "examples" / "README.md").read_text(), "examples/"))

    results = root / "benchmarks" / "RESULTS.md"
    (out / "benchmarks.md").write_text(_relink(results.read_text(), "benchmarks/"))

    api_pages = _api_pages(out)
    toc = [
        "# Contents\n",
        "```{toctree}",
        ":maxdepth: 1",
        ":caption: Capabilities",
        "",
        *capability_pages,
        "```\n",
    ]
    toc += ["```{toctree}", ":maxdepth: 1", ":caption: API reference", "", *api_pages, "```\n"]
    (out / "toc.md").write_text("\n".join(toc))


# --- Docstrings written as plain text: make their math render as text, not as broken RST markup ---

_LITERAL = re.compile(r"(``.*?``|`[^`]*`)")
_INLINE_PROBLEMS = ("start-string without end-string", "Undefined substitution")


def _rst_inline_problems(text: str, env) -> bool:
    """Whether docutils reads stray ``*`` / ``|`` in ``text`` as unterminated markup."""
    import io

    from docutils.core import publish_doctree

    stream = io.StringIO()
    settings = {
        "report_level": 2,
        "halt_level": 5,
        "warning_stream": stream,
        "env": env,
    }  # env: Sphinx's roles
    publish_doctree(text, settings_overrides=settings)
    return any(problem in stream.getvalue() for problem in _INLINE_PROBLEMS)


def plain_text_safe(app, what, name, obj, options, lines: list[str]) -> None:
    """autodoc-process-docstring: escape ``*`` and ``|`` that docutils would misread (and end a `name`
    directly followed by a letter with an escaped space), and nothing else.

    Docstrings here write formulas as text (``|x|``, ``x**2``, ``**kwargs``). Only a docstring in
    which docutils finds unterminated emphasis or substitutions is touched: outside literals, doctest
    lines and literal blocks, its ``*`` and ``|`` become literal characters. Data objects without a
    docstring of their own lose the one of their type (e.g. ``dict``'s).
    """
    if what == "data" and "\n".join(lines).strip() == (type(obj).__doc__ or "").strip():
        lines[:] = []
        return
    if not lines or not _rst_inline_problems("\n".join(lines), app.env):
        return
    literal_indent = None
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if literal_indent is not None and stripped and indent <= literal_indent:
            literal_indent = None
        if literal_indent is not None or stripped.startswith((">>>", "...")):
            continue
        if stripped.endswith("::"):
            literal_indent = indent
        parts = _LITERAL.split(line)
        for j in range(0, len(parts), 2):  # the even parts are outside literals
            parts[j] = re.sub(r"(?<!\\)([*|])", r"\\\1", parts[j])
            if j and re.match(r"\w", parts[j]):  # `GRKAN`s -> `GRKAN`\ s (renders GRKANs)
                parts[j] = "\\ " + parts[j]
        lines[i] = "".join(parts)
