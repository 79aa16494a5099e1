"""BCNet / BCNetV2 (Su et al., CVPR 2021, arXiv 2105.10533; TPAMI 2022, arXiv 2203.13714).

A *bilaterally coupled* supernet trains every width twice per step: once with the left-aligned
channels and once with the right-aligned ones, so that every channel is trained as often as any
other (a left-aligned slimmable net trains its first channels far more than its last ones).
*Complementary sampling* follows a sampled width c with the width C - c at the next step; BCNetV2
also *enlarges* the supernet to (B+m)/B of the base and lets widths run from m to B bins, which
makes the pairs exactly fair. The search scores a width config as the mean of its left and right
sub-networks and seeds evolution with a *prior* fitted to the lowest training losses seen.

The training half (the ``bcnet`` strategy: bilateral pairs, the complement rule, loss records) is
in :mod:`widthsearch.training.sampling` and :mod:`widthsearch.training.records`, re-exported here;
this module adds the search half: the prior fit and the prior-seeded population. Departures from the official code
(xiusu/BCNetV2) are listed in docs/methods/bcnet.md.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from widthsearch.errors import UserError
from widthsearch.space import ChannelSpace
from widthsearch.space.channel_space import QuadraticFlops
from widthsearch.training.records import LossRecords
from widthsearch.training.sampling import BilateralStrategy, complement

__all__ = ["BilateralStrategy", "LossRecords", "complement", "expected_losses", "fit_prior", "prior_population"]


def expected_losses(space: ChannelSpace, records: Sequence[tuple[float, Mapping[str, int]]],
                    unseen: float | None = None) -> dict[str, torch.Tensor]:
    """Per unit, the mean recorded loss at each choice; ``unseen`` (default: the worst recorded
    loss) for choices no record used, so the prior avoids what it knows nothing about."""
    if not records:
        raise UserError("no loss records: train the supernet with --strategy bcnet first")
    losses = np.array([loss for loss, _ in records], dtype=np.float64)
    penalty = float(losses.max()) if unseen is None else unseen
    table = {}
    for unit in space.units:
        position = {choice: i for i, choice in enumerate(unit.choices)}
        # a record without the unit, or with a width that is no choice, says nothing about it
        picked = np.array([position.get(config.get(unit.name), -1) for _, config in records], dtype=np.int64)
        seen = picked >= 0
        sums = np.bincount(picked[seen], weights=losses[seen], minlength=len(unit.choices))
        counts = np.bincount(picked[seen], minlength=len(unit.choices))
        means = np.divide(sums, counts, out=np.full(len(unit.choices), penalty, dtype=np.float64), where=counts > 0)
        table[unit.name] = torch.from_numpy(means)
    return table


def fit_prior(
    space: ChannelSpace,
    records: Sequence[tuple[float, Mapping[str, int]]],
    target_flops: float,
    *,
    flops_ratio: float = 0.9,
    penalty: float = 1000.0,
    steps: int = 2000,
    lr: float = 0.01,
    seed: int = 0,
) -> dict[str, list[float]]:
    """BCNetV2's prior: per-unit softmax probabilities over the choices that minimise the expected
    recorded loss plus ``penalty * (1 - E[FLOPs] / (flops_ratio * target))^2``.

    E[FLOPs] is exact (:meth:`ChannelSpace.expected_flops`). Logits start random-normal (seeded)
    and follow plain gradient descent, as the official code. The official target is 0.4·T (its
    log line says 0.9); ``flops_ratio`` makes it a parameter, default 0.9.
    """
    if not 0 < flops_ratio <= 1:
        raise UserError(f"the prior's FLOPs ratio must be in (0, 1], got {flops_ratio}")
    losses = expected_losses(space, records)
    names = [u.name for u in space.units]
    sizes = [len(u.choices) for u in space.units]
    # One row of logits per unit, so a step is a handful of tensor ops rather than a few per unit.
    # Rows shorter than the longest are padded with -inf: softmax gives the pads probability 0
    # and gradient 0, so they stay -inf and the real entries see exactly the per-unit softmax.
    logits = torch.full((len(names), max(sizes, default=0)), -math.inf, dtype=torch.float64)
    loss_table = torch.zeros_like(logits)
    gen = torch.Generator().manual_seed(seed)
    for row, (name, size) in enumerate(zip(names, sizes)):
        logits[row, :size] = torch.randn(size, generator=gen, dtype=torch.float64)  # one draw per unit, in order
        loss_table[row, :size] = losses[name]
    real = torch.isfinite(logits)
    goal = flops_ratio * float(target_flops)
    quadratic = space.expected_flops_quadratic() if hasattr(space, "expected_flops_quadratic") else None
    if quadratic is not None:
        gradient = _closed_form_gradient(quadratic, loss_table, real, goal, penalty)
    else:
        gradient = _autograd_gradient(space, names, sizes, loss_table, goal, penalty)
    for _ in range(steps):
        logits.add_(gradient(logits), alpha=-lr)  # plain gradient descent, the update of torch.optim.SGD
    probs = torch.softmax(logits, 1)
    return {name: probs[row, :size].tolist() for row, (name, size) in enumerate(zip(names, sizes))}


Gradient = Callable[[torch.Tensor], torch.Tensor]


def _closed_form_gradient(quadratic: QuadraticFlops, loss_table: torch.Tensor, real: torch.Tensor, goal: float,
                          penalty: float) -> Gradient:
    """The objective's gradient in the logits when E[FLOPs] is quadratic in the probabilities: a
    dozen small tensor ops a step and no autograd graph to build and walk back (most of the time
    of a step built with autograd)."""
    loss_weight = loss_table / loss_table.shape[0]  # d(mean over units of the expected loss)/dp

    def gradient(logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits, 1)
        p = probs[real]  # the real entries, row by row: the units' probabilities in unit order
        d_probs = loss_weight.clone()
        d_probs[real] += (-2 * penalty / goal) * (1 - quadratic(p) / goal) * quadratic.gradient(p)
        return probs * (d_probs - (probs * d_probs).sum(1, keepdim=True))  # back through each row's softmax

    return gradient


def _autograd_gradient(space: ChannelSpace, names: list[str], sizes: list[int], loss_table: torch.Tensor,
                       goal: float, penalty: float) -> Gradient:
    """The objective's gradient by autograd through ``space.expected_flops`` (zero-padded sums,
    or a space without a quadratic form)."""

    def gradient(logits: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():  # the caller may be evaluating under no_grad
            logits = logits.detach().requires_grad_(True)
            probs = torch.softmax(logits, 1)
            expected_loss = (probs * loss_table).sum(1).mean()
            rows = {name: row[:size] for name, size, row in zip(names, sizes, probs.unbind(0))}
            flops_term = (1 - space.expected_flops(rows) / goal) ** 2
            return torch.autograd.grad(expected_loss + penalty * flops_term, logits)[0]

    return gradient


def prior_population(
    space: ChannelSpace,
    prior: Mapping[str, Sequence[float]],
    target_flops: float,
    size: int,
    rng: random.Random,
    *,
    lower: float = 0.8,
    max_tries: int = 20_000,
) -> list[dict[str, int]]:
    """Up to ``size`` unique configs drawn from the prior with FLOPs in ``[lower * T, T]``.

    A space with fewer feasible configs than ``size`` gives all it has (the evolution's first
    generation is then smaller); none at all is a one-line error.
    """
    seen: set[tuple[int, ...]] = set()
    population = []
    for _ in range(max_tries):
        config = {u.name: rng.choices(u.choices, weights=prior[u.name])[0] for u in space.units}
        key = space.key(config)
        if key in seen:
            if len(seen) >= space.size:
                break  # every config of a small space has been drawn
            continue
        seen.add(key)
        if lower * target_flops <= space.cost(config).flops <= target_flops:
            population.append(config)
            if len(population) == size:
                break
    if not population:
        raise UserError(f"the prior gave no config within [{lower:g}T, T] in {max_tries} draws; "
                        "train longer or loosen the target")
    return population


def checkpoint_records(path: str) -> list[tuple[float, dict[str, int]]]:
    """The loss records of a ``--strategy bcnet`` supernet checkpoint, lowest loss first."""
    from widthsearch.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    state = (ckpt.get("states") or {}).get("strategy") or {}
    if "records" not in state:
        raise UserError(f"{path} holds no loss records: only a supernet trained with --strategy bcnet has them")
    records = LossRecords()
    records.load_state_dict(state["records"])
    return records.records()


def prior_seeding(space: ChannelSpace, records: Sequence[tuple[float, Mapping[str, int]]], *, population: int,
                  seed: int, lower: float) -> "Callable[[str, float], dict]":
    """``seeding`` for :func:`~widthsearch.methods.supernet_search.search_supernet`: fit the prior
    to the records for the FLOPs target and draw the initial population from it."""

    def seeding(metric: str, budget: float) -> dict:
        if metric != "flops":
            raise UserError("--prior records fits a FLOPs prior: give a flops target")
        prior = fit_prior(space, records, budget, seed=seed)
        initial = prior_population(space, prior, budget, population, random.Random(seed), lower=lower)
        return {"prior": prior, "initial_population": initial}

    return seeding


# ---- the whole method: bcnet supernet -> prior-seeded bilateral evolution -> retraining -> report -----
RUN_DEFAULTS: dict = {"groups": 4, "population": 20, "generations": 5}
ALIGN_TEXT = {"both": "the mean of their left- and right-aligned sub-networks", "left": "their first channels",
              "right": "their last channels"}


def run_bcnet(
    settings: Mapping,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    """BCNet end to end in ``out_dir``: a ``--strategy bcnet`` supernet, one prior-seeded evolution
    per FLOPs target scored bilaterally (``search/<target>/``), retraining of every found config
    and of the uniform net of its FLOPs under every seed, ``report.md`` and ``report.json``. Every
    stage resumes after a kill."""
    from widthsearch.models.user import require_width_mult
    from widthsearch.methods.autoslim import RUN_DEFAULTS as COMMON, check_seeds, prepare_run_folder, \
        retrain_stage, supernet_stage, write_report
    from widthsearch.methods.retraining import check_jobs
    from widthsearch.methods.supernet_search import STATE_FILE, search_meta, search_supernet
    from widthsearch.training.evaluate import supernet_evaluator

    s = {**COMMON, **RUN_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    jobs = check_jobs(s.pop("jobs", None))  # how the retraining is spread, not what it computes: not in the report
    s["seeds"] = check_seeds(s["seeds"])  # a bad list fails before any training
    require_width_mult(s["model"], "the uniform-width baselines of the retraining")  # before hours of training
    out = prepare_run_folder(out_dir, resume)
    net, meta = supernet_stage(s, out, {"strategy": "bcnet"}, resume=resume, progress=progress, echo=echo)
    align = s.get("align") or "both"
    evaluator, data = supernet_evaluator(net, meta, s["bn"], s["search_images"], align=align)
    records = checkpoint_records(meta["path"])
    population = int(s["population"])
    options = {"population": population, "mutations": population // 2, "crossovers": population - population // 2,
               "iterations": int(s["generations"]), "seed": int(s["seed"]), "lower": 0.8}
    found, evaluations = [], 0
    for fraction in s["targets"]:
        target = f"flops={float(fraction):g}"
        echo(f"[2/3] bilateral evolution with the prior from {len(records)} loss records: {target} of max FLOPs")
        folder = out / "search" / f"flops-{float(fraction):g}"
        seeding = prior_seeding(net.space, records, population=population, seed=int(s["seed"]), lower=0.8)
        summary = search_supernet(net, evaluator, [target], folder, meta=search_meta(meta), algo="evolution",
                                  options=options, resume=resume and (folder / STATE_FILE).exists(),
                                  progress=progress, seeding=seeding,
                                  scoring={"bn": s["bn"], "search_images": s["search_images"], "align": align,
                                           "prior": "records"})
        found += summary["found"]
        evaluations += summary["evaluations"]
    rows = retrain_stage(s, out, found, resume=resume, progress=progress, echo=echo, jobs=jobs)
    plots = "\n\n".join(f"![channels per unit, flops {float(f):g}](search/flops-{float(f):g}/widths.png)"
                         for f in s["targets"])
    search_text = (f"Evolution per target (population {population}, {s['generations']} generations, initial "
                   f"population and mutations from the prior fitted to the supernet's {len(records)} lowest step "
                   f"losses), {evaluations} supernet evaluations in all; candidates scored with {ALIGN_TEXT[align]}."
                   f"\n\n{plots}")
    report = write_report(out, s, rows, title="BCNet run", how="Bilateral evolution", search_text=search_text,
                          scored_images=min(int(s["search_images"]), len(data.heldout)))
    return {"targets": rows, "report": str(report), "report_json": str(out / "report.json"),
            "plot": str(out / "accuracy.png"), "search": str(out / "search")}
