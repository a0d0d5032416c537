"""Benchmarks: a YAML config expanded into runs, executed in parallel, stored in SQLite.

>>> from unlearnkit.bench import expand, preset
>>> plan = expand(preset("quick"))
>>> plan.seeds, len(plan.references)
((0,), 2)

From the shell: ``unlearnkit bench CONFIG.yaml --out results.sqlite`` or
``unlearnkit bench --preset quick``; ``--dry-run`` lists the runs and the cached models.
"""

from unlearnkit.bench.config import (
    PRESETS,
    BenchConfig,
    MethodGrid,
    Scenario,
    load_config,
    parse_config,
    preset,
)
from unlearnkit.bench.plan import Plan, Run, expand
from unlearnkit.bench.run import describe, execute, log_dir, run_plan
from unlearnkit.bench.store import (
    ARTEFACT_KEYS,
    METRIC_COLUMNS,
    ResultStore,
    read_artefacts,
    read_rows,
)

__all__ = [
    "ARTEFACT_KEYS",
    "METRIC_COLUMNS",
    "PRESETS",
    "BenchConfig",
    "MethodGrid",
    "Plan",
    "ResultStore",
    "Run",
    "Scenario",
    "describe",
    "execute",
    "expand",
    "load_config",
    "log_dir",
    "parse_config",
    "preset",
    "read_artefacts",
    "read_rows",
    "run_plan",
]
