"""The blind reader test of a model version: its slices, each reader's order, the answers, the results. Torch-free.

A quiz shows a reader ``2k`` slices one at a time, ``k`` real ones from the held-out split of the model's dataset
(never trained on) and ``k`` synthetic ones (fixed seeds, the same classes as the real ones), and asks "real or
synthetic?". The slices (``quiz_pool``) are the same for every reader of a version, so answers about one slice can
be pooled; their order (``reader_order``) is a permutation seeded from the version and the reader's name: fixed
for a reader, different across readers.

Answers live under the version in the store::

    models/<version>/quiz/<reader digest>/<position>.json

one file per answer, created once (written to a temp file, then hard-linked into place: ``link`` fails when the
name exists, so a second answer to a position is refused and never overwrites the first). Concurrent readers, and
concurrent answers of one reader, never write the same file: nothing is lost, and a reader sees whole files only.
Each answer records the slice it was about and whether it was synthetic, so the results never depend on
recomputing the order.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from models.platform.errors import ConflictError, CorruptError
from models.platform.store import Store

Kind = Literal["real", "synthetic"]
PER_KIND = 10  # real slices in a quiz (as many synthetic ones), fewer when the held-out split is smaller
SYNTHETIC_SEED = 900_000  # the quiz's synthetic slice i is drawn with seed SYNTHETIC_SEED + i
Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
QUIZ_DIR = "quiz"


@dataclass(frozen=True)
class QuizItem:
    """One slice of a quiz: a held-out row (``real``) or a seed (``synthetic``), and its class (None: one class)."""

    kind: Kind
    index: int
    label: str | None

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.index}"


class Answer(BaseModel):
    """One stored answer."""

    reader: str
    position: int
    item: str = Field(description="the slice: real-<held-out row> or synthetic-<seed>")
    truth: Kind
    label: str | None = None
    answer: Kind
    correct: bool
    answered_at: str


class Interval(BaseModel):
    """A proportion with its 95 % Wilson score interval."""

    correct: int
    answered: int
    accuracy: float | None = Field(description="correct / answered; None before the first answer")
    low: float | None
    high: float | None


class ReaderResult(Interval):
    reader: str
    complete: bool = Field(description="every slice of the quiz answered")


class FooledItem(BaseModel):
    """A synthetic slice and how often readers took it for a real one."""

    item: str
    seed: int
    label: str | None
    fooled: int = Field(description="readers who answered 'real'")
    shown: int = Field(description="readers who answered about it")


def wilson(correct: int, answered: int, z: float = Z95) -> Interval:
    """``correct`` of ``answered`` with Wilson's score interval (good at small n and at 0 or n correct)."""
    if answered <= 0:
        return Interval(correct=0, answered=0, accuracy=None, low=None, high=None)
    p = correct / answered
    denom = 1 + z * z / answered
    centre = (p + z * z / (2 * answered)) / denom
    half = z * math.sqrt(p * (1 - p) / answered + z * z / (4 * answered * answered)) / denom
    return Interval(correct=correct, answered=answered, accuracy=p, low=max(0.0, centre - half),
                    high=min(1.0, centre + half))  # fmt: skip


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "big")


def quiz_pool(
    version: str, heldout_labels: np.ndarray, class_names: list[str], per_kind: int = PER_KIND
) -> list[QuizItem]:
    """The version's quiz slices: ``k`` held-out rows chosen with a seed of the version, then ``k`` synthetic seeds
    of the same classes (``k`` = ``per_kind``, or the held-out count when smaller)."""
    k = min(per_kind, len(heldout_labels))
    rows = sorted(int(r) for r in np.random.default_rng(_seed(version, "pool")).choice(len(heldout_labels), k, False))
    one_class = len(class_names) < 2

    def name(row: int) -> str | None:
        return None if one_class else class_names[int(heldout_labels[row])]

    real = [QuizItem("real", row, name(row)) for row in rows]
    return real + [QuizItem("synthetic", SYNTHETIC_SEED + i, item.label) for i, item in enumerate(real)]


def reader_order(pool: list[QuizItem], version: str, reader: str) -> list[QuizItem]:
    """The pool in this reader's order: a permutation seeded from the version and the reader's name."""
    perm = np.random.default_rng(_seed(version, "reader", reader)).permutation(len(pool))
    return [pool[int(i)] for i in perm]


def reader_digest(reader: str) -> str:
    """The folder of a reader's answers: any name, file-system safe."""
    return hashlib.sha256(reader.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class QuizStore:
    """The answers of one model version's quiz."""

    def __init__(self, store: Store, version: str) -> None:
        self.version = version
        self.folder: Path = store.model_dir(version) / QUIZ_DIR

    def record(self, reader: str, position: int, item: QuizItem, answer: Kind) -> Answer:
        """Store an answer; ``ConflictError`` when the reader already answered this position."""
        stored = Answer(
            reader=reader,
            position=position,
            item=item.id,
            truth=item.kind,
            label=item.label,
            answer=answer,
            correct=answer == item.kind,
            answered_at=datetime.now(UTC).isoformat(),
        )
        folder = self.folder / reader_digest(reader)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".answer-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(stored.model_dump_json().encode())
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, folder / f"{position}.json")  # fails when it exists: the first answer stays
        except FileExistsError:
            raise ConflictError(f"{reader!r} already answered slice {position + 1} of {self.version}'s quiz") from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        return stored

    def _read(self, path: Path) -> Answer:
        try:
            return Answer.model_validate_json(path.read_bytes())
        except ValueError:
            raise CorruptError(f"{self.version}'s quiz: {path.parent.name}/{path.name} is not an answer") from None

    def answers(self, reader: str) -> list[Answer]:
        """The reader's answers, by position."""
        folder = self.folder / reader_digest(reader)
        found = [self._read(p) for p in folder.glob("*.json")] if folder.is_dir() else []
        return sorted(found, key=lambda a: a.position)

    def all_answers(self) -> dict[str, list[Answer]]:
        """Every reader's answers, by reader name."""
        out: dict[str, list[Answer]] = {}
        if not self.folder.is_dir():
            return out
        for folder in sorted(p for p in self.folder.iterdir() if p.is_dir()):
            for path in folder.glob("*.json"):
                answer = self._read(path)
                out.setdefault(answer.reader, []).append(answer)
        return {reader: sorted(found, key=lambda a: a.position) for reader, found in sorted(out.items())}


def reader_results(answers: dict[str, list[Answer]], total: int) -> list[ReaderResult]:
    """Each reader's accuracy with its 95 % interval."""
    out = []
    for reader, found in answers.items():
        interval = wilson(sum(a.correct for a in found), len(found))
        out.append(ReaderResult(**interval.model_dump(), reader=reader, complete=len(found) >= total))
    return out


def pooled(answers: dict[str, list[Answer]]) -> Interval:
    """Every answer of every reader together."""
    every = [a for found in answers.values() for a in found]
    return wilson(sum(a.correct for a in every), len(every))


def fooled_items(answers: dict[str, list[Answer]]) -> list[FooledItem]:
    """The synthetic slices answered about, those taken for real most often first."""
    tally: dict[str, FooledItem] = {}
    for found in answers.values():
        for a in found:
            if a.truth != "synthetic":
                continue
            entry = tally.setdefault(a.item, FooledItem(item=a.item, seed=int(a.item.rsplit("-", 1)[1]),
                                                        label=a.label, fooled=0, shown=0))  # fmt: skip
            entry.shown += 1
            entry.fooled += a.answer == "real"
    return sorted(tally.values(), key=lambda f: (-f.fooled, -f.fooled / f.shown, f.seed))
