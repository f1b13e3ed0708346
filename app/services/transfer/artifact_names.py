"""Artifact names as import files write them, matched to a project's vocabulary.

A name matches an entry by key or label (any case); MIQA's older names (``MIQA_ALIASES``) match the
entry MIQA renamed them to, and MIQA's reviewer artifact ``partial_brain_coverage`` is the project's
``full_brain_coverage`` with present and absent swapped. A name that matches nothing never refuses
a file: it is kept on the decision as an unmatched tag (and exported back), or, when the importer
asks for it, added to the vocabulary first so that every decision of the file carries its state.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterator

from app.services.transfer.model import FLIPPED, MIQA_ALIASES, MIQA_INVERTED, DecisionIn, ProjectIn
from app.services.transfer.problems import Problems

_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # an artifact entry's key (app.services.vocabulary)


def lookup(known: dict[str, dict]) -> dict[str, str]:
    """Name as written in a file -> vocabulary key: the key itself, or its label, any case."""
    found: dict[str, str] = {}
    for key, row in known.items():
        for name in (row["label"].lower(), row["label"].lower().replace(" ", "_"), key.lower()):
            found.setdefault(name, key)
    found.update({key: key for key in known})
    return found


def names_of(decision: DecisionIn) -> Iterator[str]:
    yield from decision.present
    yield from decision.absent
    yield from decision.undefined


def as_key(name: str) -> str | None:
    """The vocabulary key a new entry for this name gets (lower case, '_' for other characters), or None."""
    key = re.sub(r"[^a-z0-9_]+", "_", name.strip().lower()).strip("_")
    return key if _KEY.match(key) else None


@dataclass
class ArtifactNames:
    """One project's artifact vocabulary while its decisions are planned."""

    entry_keys: dict[str, dict]
    add_unknown: bool = False
    unmatched: dict[str, int] = field(default_factory=dict)  # name -> decisions carrying it, for the report
    _cache: dict[tuple, tuple[dict[str, str], dict[str, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._refresh()

    def _refresh(self) -> None:
        self._lookup = lookup(self.entry_keys)
        # MIQA's partial_brain_coverage, read as full_brain_coverage flipped, unless the project names it itself.
        self._inverted = {alias: target for alias, target in MIQA_INVERTED.items()
                          if target in self.entry_keys and alias not in self._lookup}

    def match(self, name: str) -> tuple[str, bool] | None:
        """(entry key, whether its states are swapped) for a name, or None when nothing matches."""
        for candidate in (name, MIQA_ALIASES.get(name.lower())):
            if candidate is None:
                continue
            key = self._lookup.get(candidate) or self._lookup.get(candidate.lower())
            if key is not None:
                return key, False
            if candidate.lower() in self._inverted:
                return self._inverted[candidate.lower()], True
        return None

    def add_unknown_entries(self, pin: ProjectIn, add: Callable[[str, str], None]) -> None:
        """With ``add_unknown``: every name of the file's decisions that matches nothing becomes an entry
        (``add(key, label)``) before any decision is planned, so each decision has a state for it."""
        if not self.add_unknown:
            return
        for experiment in pin.experiments.values():
            for scan in experiment.scans.values():
                for decision in scan.decisions:
                    for name in names_of(decision):
                        key = as_key(name)
                        if self.match(name) is None and key is not None and key not in self.entry_keys:
                            self.entry_keys[key] = {"key": key, "label": name.strip()}
                            add(key, name.strip())
                            self._refresh()

    def states(self, d: DecisionIn, problems: Problems) -> tuple[dict[str, str], dict[str, str]]:
        """(every entry's state, unmatched names' states) for a decision; a name given two states is an
        error at the decision's place."""
        cache_key = (d.present, d.absent, d.undefined, d.unlisted)
        cached = self._cache.get(cache_key)
        if cached is None:
            cached = self._resolve(d, problems)
            if cached is None:
                return {}, {}
            self._cache[cache_key] = cached
        for name in cached[1]:
            self.unmatched[name] = self.unmatched.get(name, 0) + 1
        return cached

    def _resolve(self, d: DecisionIn, problems: Problems) -> tuple[dict[str, str], dict[str, str]] | None:
        states = {k: d.unlisted for k in self.entry_keys}
        for target in self._inverted.values():  # MIQA not marking partial coverage says coverage is full
            states[target] = FLIPPED[d.unlisted]
        given: dict[str, str] = {}
        unmatched: dict[str, str] = {}
        ok = True
        for names, state in ((d.present, "present"), (d.absent, "absent"), (d.undefined, "undefined")):
            for name in names:
                found = self.match(name)
                if found is None:
                    if unmatched.get(name, state) != state:
                        problems.error(d.where, d.fields["artifacts"], f"artifact {name!r} is given two states")
                        ok = False
                    unmatched[name] = state
                    continue
                entry, flipped = found
                value = FLIPPED[state] if flipped else state
                if given.get(entry, value) != value:
                    problems.error(d.where, d.fields["artifacts"], f"artifact {name!r} is given two states")
                    ok = False
                else:
                    states[entry] = given[entry] = value
        return (states, unmatched) if ok else None
