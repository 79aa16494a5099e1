"""Channel-Bench-Macro (CBM): a lookup-table benchmark for width search.

CBM (Su et al., BCNetV2, arXiv 2203.13714; tables at github.com/xiusu/Channel-Bench-Macro)
trained every one of the 4^7 = 16,384 width configurations of two CIFAR-10 macro spaces
(MobileNet-like and ResNet-like, 7 searchable widths with 4 choices each) three times.  A
table key is 7 digits 1-4, one per searchable width in network order, digit d meaning
d/4 of that width's maximum.  Each entry has ``acc`` (3 runs), ``mean``, ``std``,
``flops`` (multiply-accumulates of conv+linear at 32x32) and ``params``.

Keys map to configs through the units the core finds on the zoo nets
(``ChannelSpace.from_model(build_model("cbm_mobilenet"), x, groups=4)``): unit i (in graph
order) is key position i and digit d is ``unit.choices[d-1]``.  :meth:`CBMBench.verify_costs`
checks that the core's cost model reproduces the table's FLOPs and params for all 16,384
configs, which also checks the mapping.

With the table's ``mean`` as the evaluator (the *oracle*) a search algorithm can be scored
by the rank of what it finds; a supernet (or any proxy) can be scored by the correlation of
its scores with ``mean``.

Modules: :mod:`~widthsearch.bench.cbm.table` (keys, :class:`CBMTable`, loading, the zoo net's
channel space), :mod:`~widthsearch.bench.cbm.oracle` (:class:`CBMBench`, :func:`run_benchmark`),
:mod:`~widthsearch.bench.cbm.stats`, :mod:`~widthsearch.bench.cbm.scores`,
:mod:`~widthsearch.bench.cbm.prior` (loss records, BCNetV2's prior seeding evolution),
:mod:`~widthsearch.bench.cbm.plots` and :mod:`~widthsearch.bench.cbm.report`. Everything public is
importable from ``widthsearch.bench.cbm`` itself.
"""
from __future__ import annotations

from widthsearch.bench.cbm.oracle import (
    CBM_LOWER,
    EVOLUTION_CBM,
    NOISE_STREAM,
    REPORT_ALGOS,
    TOP_RANK,
    CBMBench,
    run_benchmark,
)
from widthsearch.bench.cbm.plots import plot_scores, plot_space
from widthsearch.bench.cbm.prior import (
    LossRecordsFile,
    RecordsPrior,
    TableSpace,
    load_records,
    records_agreement,
    save_records,
)
from widthsearch.bench.cbm.report import report_files, write_report
from widthsearch.bench.cbm.scores import load_scores
from widthsearch.bench.cbm.stats import (
    correlations,
    expected_best_of_n,
    paired_bootstrap_kendall,
    rank_desc,
    topk_overlap,
)
from widthsearch.bench.cbm.table import (
    DEFAULT_BUDGETS,
    DIGITS,
    KEY_LENGTH,
    MODEL_NAMES,
    N_ARCHS,
    SOURCE_URL,
    SPACES,
    TABLE_FILES,
    CBMTable,
    cbm_channel_space,
    default_tables_dir,
    is_key,
    load_table,
    table_path,
)

__all__ = [
    "CBM_LOWER",
    "DEFAULT_BUDGETS",
    "DIGITS",
    "EVOLUTION_CBM",
    "KEY_LENGTH",
    "LossRecordsFile",
    "MODEL_NAMES",
    "NOISE_STREAM",
    "N_ARCHS",
    "REPORT_ALGOS",
    "RecordsPrior",
    "SOURCE_URL",
    "SPACES",
    "TABLE_FILES",
    "TOP_RANK",
    "TableSpace",
    "CBMBench",
    "CBMTable",
    "cbm_channel_space",
    "correlations",
    "default_tables_dir",
    "expected_best_of_n",
    "is_key",
    "load_scores",
    "load_records",
    "load_table",
    "paired_bootstrap_kendall",
    "plot_scores",
    "plot_space",
    "rank_desc",
    "records_agreement",
    "run_benchmark",
    "save_records",
    "table_path",
    "topk_overlap",
    "write_report",
    "report_files",
]
