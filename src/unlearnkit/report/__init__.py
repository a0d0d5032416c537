"""Reports of benchmark results (``unlearnkit report``)."""

from unlearnkit.report.summary import (
    BEST_RULES,
    ORIGINAL,
    REFERENCE,
    ScenarioSummary,
    SummaryRow,
    load_finished,
    summarize,
    tradeoff_png,
    write_report,
)

__all__ = ["BEST_RULES", "ORIGINAL", "REFERENCE", "ScenarioSummary", "SummaryRow",
           "load_finished", "summarize", "tradeoff_png", "write_report"]
