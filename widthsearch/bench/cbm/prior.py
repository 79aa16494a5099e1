"""BCNetV2's prior on the oracle bench: loss records in and out, and prior-seeded evolution.

A ``--strategy bcnet`` supernet keeps its 100 lowest step losses with the widths that gave them
(:class:`~widthsearch.training.records.LossRecords`). BCNetV2 fits a per-unit prior over the
width choices to them (:func:`~widthsearch.methods.bcnet.fit_prior`) and draws evolution's first
population from it (:func:`~widthsearch.methods.bcnet.prior_population`). This module runs the
same two functions against a Channel-Bench-Macro table, so that the prior's effect on the search
can be scored by the table's truth.

The records come from a checkpoint or from a small JSON file written by :func:`save_records`
(a few KB, so a benchmark can be rerun without the checkpoint).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from widthsearch.bench.cbm.table import DIGITS, KEY_LENGTH, MODEL_NAMES
from widthsearch.errors import UserError

__all__ = ["RECORDS_FORMAT", "LossRecordsFile", "RecordsPrior", "TableSpace", "load_records", "records_agreement",
           "save_records"]

RECORDS_FORMAT = "widthsearch-loss-records"
Records = List[Tuple[float, Dict[str, int]]]


@dataclass
class LossRecordsFile:
    """Loss records, lowest loss first, and where they came from (``model``: the zoo net's name
    when known; ``source``: free-form provenance, e.g. the checkpoint's training arguments)."""

    records: Records
    model: Optional[str] = None
    source: Optional[Dict[str, Any]] = None


def load_records(path: Any) -> LossRecordsFile:
    """Records from a ``.json`` file written by :func:`save_records` or from a ``--strategy bcnet``
    supernet checkpoint (any other file is read as a checkpoint)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"loss records file {p} not found")
    if p.suffix.lower() == ".json":
        return _load_json_records(p)
    from widthsearch.methods.bcnet import checkpoint_records
    from widthsearch.training.checkpoint import load_checkpoint

    records = checkpoint_records(str(p))
    args = dict(load_checkpoint(p).get("args") or {})
    keep = ("model", "strategy", "groups", "epochs", "batch_size", "lr", "data", "heldout_fraction", "seed")
    source = {"checkpoint": p.name, **{k: args[k] for k in keep if k in args}}
    return LossRecordsFile(records, args.get("model"), source)


def _load_json_records(p: Path) -> LossRecordsFile:
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read loss records {p}: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != RECORDS_FORMAT or not isinstance(raw.get("records"), list):
        raise UserError(f"{p} is not a loss records file (a JSON object with format {RECORDS_FORMAT!r} and records)")
    records: Records = []
    for i, item in enumerate(raw["records"]):
        loss = item.get("loss") if isinstance(item, dict) else None
        config = item.get("config") if isinstance(item, dict) else None
        if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss):
            raise UserError(f"{p}: record {i} has no finite loss")
        if not isinstance(config, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                  for v in config.values()):
            raise UserError(f"{p}: record {i} has no config of integer widths")
        records.append((float(loss), {str(k): int(v) for k, v in config.items()}))
    if not records:
        raise UserError(f"{p} holds no loss records")
    records.sort(key=lambda r: r[0])
    return LossRecordsFile(records, raw.get("model"), raw.get("source"))


def save_records(path: Any, loaded: LossRecordsFile, keys: Optional[Sequence[str]] = None) -> Path:
    """Write the records as JSON (lowest loss first); ``keys``: the CBM key of each record, kept
    only for the reader (loading ignores them)."""
    from widthsearch.io import write_text_atomic

    rows = []
    for i, (loss, config) in enumerate(loaded.records):
        row: Dict[str, Any] = {"loss": loss, "config": config}
        if keys is not None:
            row["key"] = keys[i]
        rows.append(json.dumps(row))
    head = json.dumps({"format": RECORDS_FORMAT, "model": loaded.model, "source": loaded.source}, indent=2)
    # one record per line keeps the file small (100 records: about 20 KB) and diffable
    return write_text_atomic(path, head[:-2] + ',\n  "records": [\n    ' + ",\n    ".join(rows) + "\n  ]\n}\n")


@dataclass
class _Cost:
    flops: int
    params: int


class TableSpace:
    """A CBM space as :func:`~widthsearch.methods.bcnet.fit_prior` and
    :func:`~widthsearch.methods.bcnet.prior_population` need it, with costs from the table.

    ``expected_flops`` contracts the 4^7 FLOPs tensor with the 7 per-unit distributions: exact
    (the table's FLOPs equal the core's, see ``--verify-costs``) and about 10x faster than the
    core's term-by-term sum, which matters for 150 prior fits of 2,000 steps each.
    """

    def __init__(self, bench: Any) -> None:
        self.bench = bench
        self.units = list(bench.space.units)
        self.size = len(DIGITS) ** KEY_LENGTH
        table = bench.table
        # position of key d1..d7 in a C-ordered (4,)*7 tensor: the digits read in base 4
        digits = np.array([[int(c) - 1 for c in k] for k in table.keys], dtype=np.int64)
        flat = digits @ (len(DIGITS) ** np.arange(KEY_LENGTH - 1, -1, -1))
        flops = np.zeros(self.size, dtype=np.float64)
        flops[flat] = table.flops
        self._flops = torch.from_numpy(flops.reshape((len(DIGITS),) * KEY_LENGTH))

    def expected_flops(self, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        out = self._flops
        for unit in self.units:  # contract the leading axis, unit by unit in key order
            out = torch.tensordot(probs[unit.name].to(torch.float64), out, dims=([0], [0]))
        return out

    def expected_flops_quadratic(self) -> Any:
        """The core space's quadratic form of E[FLOPs] (:meth:`ChannelSpace.expected_flops_quadratic`):
        the table's FLOPs are the core's, so its E[FLOPs] are too, and the prior fit's steps take a
        few tensor ops instead of seven contractions of the 4^7 table."""
        return self.bench.space.expected_flops_quadratic()

    def cost(self, config: Mapping[str, int]) -> _Cost:
        return _Cost(self.bench.flops(config), self.bench.params(config))

    def key(self, config: Mapping[str, int]) -> str:
        return self.bench.config_to_key(config)


class RecordsPrior:
    """BCNetV2's prior fitted to ``records`` on one CBM space, and the first population drawn from
    it, cached per (budget, seed, population, lower) so that several evolution variants share a fit.

    The fit and the draw are :func:`~widthsearch.methods.bcnet.prior_seeding`'s, with the search
    seed as the fit's seed (as ``search --prior records`` does).
    """

    def __init__(self, bench: Any, loaded: LossRecordsFile, flat: bool = False) -> None:
        check_records(bench, loaded)
        self.bench, self.loaded, self.flat = bench, loaded, flat
        self.space = TableSpace(bench)
        # flat: every loss equal, so only the FLOPs term shapes the prior (the control that shows
        # what the records' losses add)
        self.records = [(0.0, c) for _, c in loaded.records] if flat else list(loaded.records)
        self._cache: Dict[Tuple[float, int, int, float], Dict[str, Any]] = {}

    def seeding(self, budget_flops: float, seed: int, population: int, lower: float) -> Dict[str, Any]:
        """``{"prior": ..., "initial_population": [...]}`` for ``evolution_search``."""
        from widthsearch.methods.bcnet import prior_seeding

        key = (float(budget_flops), int(seed), int(population), float(lower))
        if key not in self._cache:
            seed_fn = prior_seeding(self.space, self.records, population=population, seed=seed, lower=lower)
            self._cache[key] = seed_fn("flops", float(budget_flops))
        return self._cache[key]

    def describe(self, seeded: Mapping[str, Any]) -> Dict[str, Any]:
        """What a run was seeded with: the records used, the fitted prior and the first population's size."""
        return {"records": len(self.records), "model": self.loaded.model, "flat": self.flat,
                "probs": {k: [round(x, 6) for x in v] for k, v in seeded.get("prior", {}).items()},
                "initial_population": len(seeded.get("initial_population", []))}


def records_agreement(bench: Any, loaded: LossRecordsFile) -> Dict[str, Any]:
    """What the records can tell the prior: Kendall tau of their negative loss with the table's
    accuracy and with FLOPs over the recorded archs, and how many distinct archs they hold. A step's
    loss also carries the step's batch and how far training had got, so a low tau here means the
    records rank their archs little better than chance."""
    from widthsearch.bench.cbm.stats import correlations

    keys = [bench.config_to_key(c) for _, c in loaded.records]
    neg = [-loss for loss, _ in loaded.records]
    rows = [bench.table.index[k] for k in keys]
    return {"records": len(keys), "distinct": len(set(keys)),
            "kendall_accuracy": correlations(neg, bench.table.mean[rows])["kendall"],
            "kendall_flops": correlations(neg, bench.table.flops[rows].astype(float))["kendall"]}


def check_records(bench: Any, loaded: LossRecordsFile) -> None:
    """``UserError`` unless every record is a config of this bench's space (right model, every unit
    named, every width one of its unit's choices)."""
    want = MODEL_NAMES[bench.name]
    if loaded.model is not None and str(loaded.model) != want:
        raise UserError(f"the loss records come from a {loaded.model} supernet; the {bench.name} space needs {want}'s")
    choices = {u.name: tuple(u.choices) for u in bench.space.units}
    for i, (_, config) in enumerate(loaded.records):
        if set(config) != set(choices):
            missing = sorted(set(choices) - set(config)) or sorted(set(config) - set(choices))
            raise UserError(f"loss record {i} does not name the units of the {bench.name} space "
                            f"(e.g. {missing[0]!r}); were they trained with --groups 4 on {want}?")
        for name, width in config.items():
            if width not in choices[name]:
                raise UserError(f"loss record {i}: width {width} of unit {name!r} is not one of its choices "
                                f"{list(choices[name])}; were they trained with --groups 4?")

