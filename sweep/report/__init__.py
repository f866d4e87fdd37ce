"""What a study found: the HTML report (`page`, built from one module per section over one trials
frame), the best trial or Pareto set as values (`best`), and optuna-dashboard (`dashboard`)."""

from sweep.report.best import best_summary, pareto_summary
from sweep.report.page import build_report, figures_for_dashboard, report_file_name, write_report

__all__ = [
    "best_summary",
    "build_report",
    "figures_for_dashboard",
    "pareto_summary",
    "report_file_name",
    "write_report",
]
