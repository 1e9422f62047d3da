"""A deterministic, contest-like corpus for the deduplication benchmark.

The corpus models how the files of a contest platform (OIOIOI on Filetracker) repeat,
because deduplication only pays where contents repeat the way they do in real life:

* **Problems** have 10-80 tests (10-40 at the default scale). Inputs are text (lines of
  integers, weighted graphs, matrices, strings, grids of ``.#``; each kind dealt once
  before any repeats), from a few KiB to many MiB: most tests are small, the last groups
  are the large ones (up to 16 MiB at the default scale, 64 MiB at ``--scale large``).
  At the default scale problems also differ in scale (n <= 10**4 or n <= 10**6): one in
  five reaches the maximum, the others stop at 1/2.3, 1/5.3, 1/12 or 1/28 of it. Outputs
  are much smaller (one answer per line). A package also holds a checker (source and a compiled
  binary), model solutions, a statement (a PDF: an incompressible blob) and the
  uploaded package archive (a zip: incompressible, and a new one for every upload).
* **Re-uploads**: a problem package is uploaded again with 1-3 tests changed (fixed
  last lines of an input, or a test regenerated), 0-3 times while it is prepared (1.2
  times on average); the unchanged files are the same contents under new paths
  (``.../package-2/...``), the archive is all new.
* **Reuse across contests**: a problem from an earlier contest or year appears again in
  a later one (``/contests/<c>/problems/<p>/...``) with the very same package (30 % of
  a contest's problems), and the last contest of each year is a copy of
  an earlier contest (a mirror or training round: all its packages again, new submissions).
* **Generator outputs shared across problems**: the same generator with the same seed
  (a random tree, a big random permutation) gives the same input in several problems.
* **Submissions**: many small, near-identical sources per problem (a contestant's edits
  between two submissions, six submissions per contestant), 15 % submitted again unchanged.
* **Tail-changed inputs**: in each problem, one large input differs from another only
  in its last lines (the same graph, other queries): what whole-file dedup cannot
  catch and content-defined chunking can.

Every distinct content is a :class:`Recipe` (a kind, a size, a seed, and for a derived
content the recipe it derives from); paths name recipes, so the corpus knows its true
number of distinct contents without hashing anything. Contents are made with numpy
(vectorised digits and separators), so making a GiB takes seconds, and are the same
bytes for the same seed. The corpus is laid out as one folder per contest-year, so that
systems can ingest the years one after another.

Run ``python -m benchmarks.corpus [--scale small|default|large]`` to print its size.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = ["SCALES", "Corpus", "Recipe", "Scale", "Sizes", "build", "make"]

T = TypeVar("T")
KiB = 1 << 10
MiB = 1 << 20


@dataclass(frozen=True)
class Scale:
    """How big a corpus is: its shape, not its contents."""

    name: str
    years: int
    contests_per_year: int
    problems_per_contest: int
    tests: tuple[int, int]
    input_size: tuple[int, int]
    submissions_per_problem: int
    shared_generator_outputs: int
    largest_spread: float = 0.0
    """Problems differ in scale (n <= 10**4 or n <= 10**6): a problem's largest inputs are
    ``input_size[1]`` divided by 2**0, 2**(s/5), ... 2**(4s/5) for ``s = largest_spread``,
    each scale dealt once in every five new problems, so one in five reaches the maximum."""


SCALES = {
    "small": Scale("small", years=2, contests_per_year=2, problems_per_contest=2, tests=(10, 10),
                   input_size=(2 * KiB, 256 * KiB), submissions_per_problem=4, shared_generator_outputs=2),
    # about 1 GiB: the whole run takes minutes on 2 cores, Filetracker's gzip -9 being the slowest part
    "default": Scale("default", years=4, contests_per_year=3, problems_per_contest=2, tests=(10, 40),
                     input_size=(4 * KiB, 16 * MiB), submissions_per_problem=30, shared_generator_outputs=6,
                     largest_spread=6),
    "large": Scale("large", years=6, contests_per_year=4, problems_per_contest=3, tests=(10, 80),
                   input_size=(4 * KiB, 64 * MiB), submissions_per_problem=100, shared_generator_outputs=12),
}

INPUT_KINDS = ("ints_small", "ints_large", "graph", "matrix", "strings", "grid")
PARTS = {"tail": "tail-changed test inputs", "answers": "test outputs", "code": "sources (solutions, checkers, "
         "submissions)", "submission": "sources (solutions, checkers, submissions)", "exe": "compiled checkers",
         "pdf": "statements (PDF)", "zip": "package archives"}


@dataclass(frozen=True)
class Recipe:
    """One distinct content: made by :func:`make` from these fields alone.

    ``base`` is the content this one derives from (a tail-changed input keeps all but
    the last ``tail`` bytes of it; a submission edits some lines of it).
    """

    kind: str
    size: int
    seed: int
    base: Recipe | None = None
    tail: int = 0

    @property
    def part(self) -> str:
        """Which part of a contest's files this content is, for the report."""
        return PARTS.get(self.kind, "test inputs")


@dataclass
class Corpus:
    """The files of a corpus: ``years[y]`` maps a store path to the recipe of its content."""

    scale: Scale
    seed: int
    years: list[dict[str, Recipe]] = field(default_factory=list)

    def files(self) -> Iterator[tuple[int, str, Recipe]]:
        for year, files in enumerate(self.years):
            for path, recipe in files.items():
                yield year, path, recipe

    @property
    def logical_bytes(self) -> int:
        return sum(r.size for _, _, r in self.files())

    @property
    def file_count(self) -> int:
        return sum(len(files) for files in self.years)

    def distinct(self) -> set[Recipe]:
        return {r for _, _, r in self.files()}

    @property
    def distinct_bytes(self) -> int:
        return sum(r.size for r in self.distinct())

    def tail_shared_bytes(self) -> int:
        """Bytes of distinct contents that repeat a prefix of another: sub-file redundancy."""
        return sum(r.size - r.tail for r in self.distinct() if r.kind == "tail")

    def year_dir(self, year: int) -> str:
        return f"year-{year + 1}"

    def materialize(self, root: Path) -> Sizes:
        """Write every file under ``root/year-N/<path>``: one real copy per path (no links).

        Returns the true sizes (a recipe's ``size`` is the size aimed at).
        """
        by_recipe: dict[Recipe, list[Path]] = {}
        for year, path, recipe in self.files():
            by_recipe.setdefault(recipe, []).append(root / self.year_dir(year) / path.lstrip("/"))
        bases = {r.base for r in by_recipe if r.base is not None}
        cache: dict[Recipe, bytes] = {}
        sizes = Sizes()
        for recipe in sorted(by_recipe, key=_depth):  # bases before what derives from them
            data = make(recipe, cache)
            if recipe in bases:
                cache[recipe] = data
            sizes.distinct += 1
            sizes.distinct_bytes += len(data)
            part = sizes.by_part.setdefault(recipe.part, [0, 0, 0, 0])
            part[2] += 1
            part[3] += len(data)
            if recipe.kind == "tail":
                assert recipe.base is not None
                sizes.tail_shared_bytes += len(data) - recipe.tail
            for target in by_recipe[recipe]:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                sizes.files += 1
                sizes.logical_bytes += len(data)
                part[0] += 1
                part[1] += len(data)
        return sizes


@dataclass
class Sizes:
    """What a written corpus holds, counted while writing it."""

    files: int = 0
    logical_bytes: int = 0
    distinct: int = 0
    distinct_bytes: int = 0
    tail_shared_bytes: int = 0
    by_part: dict[str, list[int]] = field(default_factory=dict)
    """Part of the corpus -> [files, logical bytes, distinct contents, distinct bytes]."""


def _depth(recipe: Recipe) -> int:
    depth = 0
    while recipe.base is not None:
        recipe, depth = recipe.base, depth + 1
    return depth


# -- making contents ---------------------------------------------------------------------

def _digits(values: np.ndarray, seps: np.ndarray) -> bytes:
    """``values`` (non-negative ints) as decimal text, each followed by its separator byte."""
    values = values.astype(np.int64)
    width = max(1, len(str(int(values.max())))) if len(values) else 1
    table = np.empty((len(values), width + 1), dtype=np.uint8)
    rest = values.copy()
    for column in range(width - 1, -1, -1):
        table[:, column] = 48 + rest % 10
        rest //= 10
    table[:, width] = seps
    lengths = np.ones(len(values), dtype=np.int64)
    for power in range(1, width):
        lengths += values >= 10**power
    keep = np.arange(width + 1)[None, :] >= (width - lengths)[:, None]
    return table[keep].tobytes()


def _line_seps(rng: np.random.Generator, count: int, per_line: tuple[int, int]) -> np.ndarray:
    """Spaces between numbers and a newline after every 1..n of them."""
    seps = np.full(count, 32, dtype=np.uint8)
    lengths = rng.integers(per_line[0], per_line[1] + 1, count // max(1, per_line[0]) + 1)
    ends = np.cumsum(lengths) - 1
    seps[ends[ends < count]] = 10
    seps[-1] = 10
    return seps


def _numbers(rng: np.random.Generator, size: int, columns: list[tuple[int, int]] | None,
             per_line: tuple[int, int] = (1, 1), header: bytes = b"") -> bytes:
    """About ``size`` bytes of lines of integers, cut at a line end."""
    if columns is None:
        raise ValueError("columns required")
    mean_digits = sum(len(str(high)) for _, high in columns) / len(columns)
    count = int(size / (mean_digits + 0.6)) + 16
    rows = count // len(columns) + 1
    values = np.stack([rng.integers(low, high, rows) for low, high in columns], axis=1).reshape(-1)[:count]
    seps = _line_seps(rng, count, per_line) if len(columns) == 1 else np.tile(
        np.array([32] * (len(columns) - 1) + [10], dtype=np.uint8), rows)[:count]
    text = header + _digits(values, seps)
    return _cut(text, size)


def _cut(text: bytes, size: int) -> bytes:
    if len(text) <= size:
        return text
    end = text.rfind(b"\n", 0, size)
    return text[: end + 1] if end > 0 else text[:size]


def _letters(rng: np.random.Generator, size: int, alphabet: bytes, width: int) -> bytes:
    pool = np.frombuffer(alphabet, dtype=np.uint8)
    data = pool[rng.integers(0, len(pool), size)]
    data[width::width + 1] = 10
    data[-1] = 10
    return data.tobytes()


_CODE_WORDS = ("int", "long long", "for", "while", "if", "return", "vector<int>", "auto", "std::cin",
               "std::cout", "n", "m", "i", "j", "k", "ans", "dp", "a", "b", "sum", "res", "q", "x", "y",
               "+=", "=", "<", "++", "%", "MOD", "max", "min", "sort", "push_back", "size()", "0", "1")


def _code(seed: int, size: int) -> bytes:
    """A C++-like source of about ``size`` bytes."""
    rng = random.Random(seed)
    lines = ["#include <bits/stdc++.h>", "using namespace std;", "int main() {"]
    total = sum(len(x) + 1 for x in lines)
    while total < size:
        depth = "    " * rng.randint(1, 3)
        line = depth + " ".join(rng.choice(_CODE_WORDS) for _ in range(rng.randint(2, 9))) + ";"
        lines.append(line)
        total += len(line) + 1
    return ("\n".join(lines) + "\n}\n").encode()


def _edited(base: bytes, seed: int) -> bytes:
    """``base`` with a few lines changed, added or removed: a contestant's next submission."""
    rng = random.Random(seed)
    lines = base.split(b"\n")
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(3, max(4, len(lines) - 2))
        action = rng.random()
        new = b"    " + b" ".join(rng.choice(_CODE_WORDS).encode() for _ in range(rng.randint(2, 7))) + b";"
        if action < 0.5:
            lines[i] = new
        elif action < 0.8:
            lines.insert(i, new)
        elif len(lines) > 8:
            del lines[i]
    lines.insert(0, b"// %d" % rng.getrandbits(48))  # never equal to another edit by chance
    return b"\n".join(lines)


def _binary(rng: np.random.Generator, size: int, header: bytes, zero_pages: float) -> bytes:
    """Incompressible bytes (``zero_pages`` of its 4 KiB pages zeroed, like an executable)."""
    data = np.frombuffer(rng.bytes(size), dtype=np.uint8).copy()
    if zero_pages:
        pages = np.nonzero(rng.random(size // 4096 + 1) < zero_pages)[0]
        for page in pages:
            data[page * 4096:(page + 1) * 4096] = 0
    data[: len(header)] = np.frombuffer(header, dtype=np.uint8)[: size]
    return data.tobytes()


def make(recipe: Recipe, cache: dict[Recipe, bytes] | None = None) -> bytes:
    """The bytes of ``recipe``: the same for the same recipe, whatever else was made.

    ``cache`` holds contents already made that derived recipes may start from.
    """
    if cache is not None and recipe in cache:
        return cache[recipe]
    rng = np.random.default_rng(recipe.seed)
    kind, size = recipe.kind, recipe.size
    if kind == "tail":
        assert recipe.base is not None
        base = make(recipe.base, cache)
        keep = base[: len(base) - recipe.tail]
        keep = keep[: keep.rfind(b"\n") + 1]
        data = keep + make(Recipe(recipe.base.kind, len(base) - len(keep), recipe.seed), None)
    elif kind == "submission":
        assert recipe.base is not None
        data = _edited(make(recipe.base, cache), recipe.seed)
    elif kind == "ints_small":
        data = _numbers(rng, size, [(0, 1001)], (1, 20), b"%d\n" % (size // 8))
    elif kind == "ints_large":
        data = _numbers(rng, size, [(1, 10**9 + 1)], (1, 10), b"%d\n" % (size // 50))
    elif kind == "graph":
        n = 200_000
        data = _numbers(rng, size, [(1, n + 1), (1, n + 1), (1, 10**9 + 1)], header=b"%d %d\n" % (n, size // 22))
    elif kind == "matrix":
        data = _numbers(rng, size, [(0, 100)] * 20, header=b"%d\n" % int((size / 3) ** 0.5))
    elif kind == "strings":
        data = _letters(rng, size, b"abcdefghijklmnopqrstuvwxyz", int(rng.integers(10, 1000)))
    elif kind == "grid":
        data = _letters(rng, size, b"......#", int(rng.integers(50, 1000)))
    elif kind == "answers":
        data = _numbers(rng, size, [(0, 10**18)])
    elif kind == "code":
        data = _code(recipe.seed, size)
    elif kind == "pdf":
        data = _binary(rng, size, b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n", 0.0)
    elif kind == "zip":
        data = _binary(rng, size, b"PK\x03\x04", 0.0)
    elif kind == "exe":
        data = _binary(rng, size, b"\x7fELF\x02\x01\x01", 0.4)
    else:
        raise ValueError(f"unknown content kind {kind!r}")
    return data


# -- the corpus' shape ------------------------------------------------------------------

@dataclass
class _Problem:
    name: str
    files: dict[str, Recipe]
    model: Recipe


class _Builder:
    def __init__(self, scale: Scale, seed: int) -> None:
        self.scale = scale
        self.rng = random.Random(seed)
        self._next_seed = seed * 1_000_003
        self._decks: dict[str, list[Any]] = {}

    def seed(self) -> int:
        self._next_seed += 1
        return self._next_seed

    def recipe(self, kind: str, size: int, **extra: object) -> Recipe:
        return Recipe(kind, size, self.seed(), **extra)  # type: ignore[arg-type]

    def deal(self, deck: str, cards: tuple[T, ...]) -> T:
        """The next of ``cards`` from a shuffled deck, reshuffled when empty: each card once
        in every ``len(cards)`` deals, so no kind of problem is missing by chance."""
        pile = self._decks.setdefault(deck, [])
        if not pile:
            pile.extend(cards)
            self.rng.shuffle(pile)
        return pile.pop()  # type: ignore[no-any-return]

    def largest_input(self) -> int:
        """The size of a new problem's largest inputs (see :attr:`Scale.largest_spread`)."""
        low, high = self.scale.input_size
        step = self.deal("scale", (0, 1, 2, 3, 4))
        return max(low, int(high / 2 ** (self.scale.largest_spread * step / 5)))

    def input_size(self, position: float, high: int) -> int:
        """Small for the first tests, up to ``high`` for the last groups."""
        low = self.scale.input_size[0]
        x = min(1.0, max(0.0, position ** 3 + self.rng.uniform(-0.05, 0.05)))
        return int(low * (high / low) ** x)

    def answers_for(self, recipe: Recipe) -> Recipe:
        return self.recipe("answers", max(24, recipe.size // self.rng.choice((10, 50, 300, 2000))))

    def problem(self, name: str, shared: list[Recipe]) -> _Problem:
        rng = self.rng
        count = rng.randint(*self.scale.tests)
        kind = self.deal("kind", INPUT_KINDS)
        high = self.largest_input()
        inputs = [self.recipe(kind, self.input_size(i / (count - 1), high)) for i in range(count)]
        # the same generator and seed as in other problems: the same input
        for i in rng.sample(range(count), min(len(shared), rng.randint(0, 2))):
            inputs[i] = rng.choice(shared)
        # one large input differing from another only in its last lines
        big = max(range(count), key=lambda i: inputs[i].size)
        base = inputs[big]
        inputs.append(Recipe("tail", base.size, self.seed(), base=base, tail=max(64, base.size // 200)))
        files: dict[str, Recipe] = {}
        for i, recipe in enumerate(inputs):
            files[f"tests/{name}{i}.in"] = recipe
            files[f"tests/{name}{i}.out"] = self.answers_for(recipe)
        model = self.recipe("code", rng.randint(1500, 6000))
        files[f"prog/{name}.cpp"] = model
        files[f"prog/{name}b.cpp"] = self.recipe("code", rng.randint(1500, 6000))
        files[f"prog/{name}chk.cpp"] = self.recipe("code", rng.randint(2000, 8000))
        files[f"prog/{name}chk.e"] = self.recipe("exe", rng.randint(200 * KiB, 900 * KiB))
        files[f"doc/{name}zad.pdf"] = self.recipe("pdf", rng.randint(60 * KiB, 600 * KiB))
        files[f"{name}.zip"] = self.recipe("zip", self.archive_size(files))
        return _Problem(name, files, model)

    def archive_size(self, files: dict[str, Recipe]) -> int:
        return max(4 * KiB, sum(r.size for r in files.values()) // 3)

    def reuploaded(self, problem: _Problem) -> _Problem:
        """The same package with a few tests changed: fixed last lines or regenerated."""
        files = dict(problem.files)
        inputs = [p for p in files if p.endswith(".in")]
        for path in self.rng.sample(inputs, min(len(inputs), self.rng.randint(1, 3))):
            old = files[path]
            if old.kind != "tail" and old.size > 4 * KiB and self.rng.random() < 0.5:
                new = Recipe("tail", old.size, self.seed(), base=old, tail=max(64, old.size // 100))
            else:
                new = self.recipe(old.kind if old.kind != "tail" else "ints_large", old.size)
            files[path] = new
            files[path[:-3] + ".out"] = self.answers_for(new)
        zip_path = next(p for p in files if p.endswith(".zip"))
        files[zip_path] = self.recipe("zip", self.archive_size(files))
        return _Problem(problem.name, files, problem.model)

    def submissions(self, problem: _Problem, prefix: str) -> dict[str, Recipe]:
        files: dict[str, Recipe] = {}
        previous = problem.model
        for i in range(self.scale.submissions_per_problem):
            if i % 6 == 0:
                previous = self.recipe("code", self.rng.randint(800, 8000))  # another contestant
            elif self.rng.random() < 0.15:
                pass  # submitted again unchanged
            else:
                previous = Recipe("submission", previous.size, self.seed(), base=previous)
            files[f"{prefix}/submissions/{problem.name}-{i}.cpp"] = previous
        return files


def build(scale: Scale | str = "default", seed: int = 1) -> Corpus:
    """The corpus of ``scale`` for ``seed``: only recipes, nothing is made or written yet."""
    scale = SCALES[scale] if isinstance(scale, str) else scale
    b = _Builder(scale, seed)
    low, high = scale.input_size
    shared = [b.recipe(b.rng.choice(INPUT_KINDS), int(low * (high / low) ** b.rng.uniform(0.3, 0.8)))
              for _ in range(scale.shared_generator_outputs)]
    corpus = Corpus(scale, seed)
    pool: list[list[_Problem]] = []  # every problem as its uploads, oldest first
    contests: list[list[list[_Problem]]] = []
    number = 0
    for year in range(scale.years):
        files: dict[str, Recipe] = {}
        for contest in range(scale.contests_per_year):
            cname = f"/contests/y{year + 1}c{contest + 1}"
            if contests and contest == scale.contests_per_year - 1:
                chosen = b.rng.choice(contests)  # a mirror or training copy of an earlier contest
            else:
                chosen = []
                for _ in range(scale.problems_per_contest):
                    if pool and b.rng.random() < 0.3:
                        chosen.append([b.rng.choice(pool)[-1]])  # an older problem, its last package
                        continue
                    number += 1
                    uploads = [b.problem(f"p{number:03d}", shared)]
                    for _ in range(b.rng.choice((0, 0, 1, 1, 2, 3))):  # fixed while being prepared
                        uploads.append(b.reuploaded(uploads[-1]))
                    pool.append(uploads)
                    chosen.append(uploads)
                contests.append(chosen)
            for uploads in chosen:
                prefix = f"{cname}/problems/{uploads[0].name}"
                for k, upload in enumerate(uploads):
                    for path, recipe in upload.files.items():
                        files[f"{prefix}/package-{k + 1}/{path}"] = recipe
                files.update(b.submissions(uploads[-1], cname))
        corpus.years.append(files)
    return corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="default")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", type=Path, default=None, help="also write the files under this folder")
    args = parser.parse_args()
    corpus = build(args.scale, args.seed)
    print(f"corpus {args.scale}, seed {args.seed}: {corpus.file_count:,} files, "
          f"{corpus.logical_bytes / MiB:,.1f} MiB logical, {len(corpus.distinct()):,} distinct contents "
          f"({corpus.distinct_bytes / MiB:,.1f} MiB)")
    if args.write:
        sizes = corpus.materialize(args.write)
        print(f"written to {args.write}: {sizes}")


if __name__ == "__main__":
    main()
