"""Shared result type for the figure/table modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Output:
    """What one figure/table module wrote and which result files it read or missed."""

    name: str
    files: list[Path] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def read(self, *paths: Path) -> None:
        for p in paths:
            if p is not None and Path(p) not in self.sources:
                self.sources.append(Path(p))

    def miss(self, what: str) -> None:
        if what not in self.missing:
            self.missing.append(what)

    def as_dict(self, root: Path | None = None) -> dict:
        def rel(p: Path) -> str:
            if root is not None:
                try:
                    return str(Path(p).relative_to(root))
                except ValueError:
                    pass
            return str(p)

        return {
            "name": self.name,
            "files": [rel(p) for p in self.files],
            "sources": sorted(rel(p) for p in self.sources),
            "missing": list(self.missing),
        }
