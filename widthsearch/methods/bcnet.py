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

import random
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from widthsearch.errors import UserError
from widthsearch.space import ChannelSpace
from widthsearch.training.records import LossRecords
from widthsearch.training.sampling import BilateralStrategy, complement

__all__ = ["BilateralStrategy", "LossRecords", "complement", "expected_losses", "fit_prior", "prior_population"]


def expected_losses(space: ChannelSpace, records: Sequence[tuple[float, Mapping[str, int]]],
                    unseen: float | None = None) -> dict[str, torch.Tensor]:
    """Per unit, the mean recorded loss at each choice; ``unseen`` (default: the worst recorded
    loss) for choices no record used, so the prior avoids what it knows nothing about."""
    if not records:
        raise UserError("no loss records: train the supernet with --strategy bcnet first")
    penalty = max(loss for loss, _ in records) if unseen is None else unseen
    table = {}
    for unit in space.units:
        sums = {c: [0.0, 0] for c in unit.choices}
        for loss, config in records:
            if config.get(unit.name) in sums:
                sums[config[unit.name]][0] += loss
                sums[config[unit.name]][1] += 1
        table[unit.name] = torch.tensor([s / n if n else penalty for s, n in sums.values()], dtype=torch.float64)
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
    gen = torch.Generator().manual_seed(seed)
    logits = {u.name: torch.randn(len(u.choices), generator=gen, dtype=torch.float64).requires_grad_(True)
              for u in space.units}
    optimizer = torch.optim.SGD(list(logits.values()), lr=lr)
    goal = flops_ratio * float(target_flops)
    for _ in range(steps):
        optimizer.zero_grad()
        probs = {name: torch.softmax(z, 0) for name, z in logits.items()}
        expected_loss = torch.stack([(probs[n] * losses[n]).sum() for n in probs]).mean()
        flops_term = (1 - space.expected_flops(probs) / goal) ** 2
        (expected_loss + penalty * flops_term).backward()
        optimizer.step()
    with torch.no_grad():
        return {name: torch.softmax(z, 0).tolist() for name, z in logits.items()}


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
    report = write_report(out, s, meta, rows, title="BCNet run", how="Bilateral evolution", search_text=search_text,
                          scored_images=min(int(s["search_images"]), len(data.heldout)))
    return {"targets": rows, "report": str(report), "report_json": str(out / "report.json"),
            "search": str(out / "search")}
