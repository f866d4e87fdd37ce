"""What a study found: the HTML report (`page`, built from one module per section over one trials
frame), the best trial or Pareto set as values (`best`), and optuna-dashboard (`dashboard`)."""

from sweep.lazy import exports

# public name -> its module: imported on first use, so that reading one light module loads no heavy one
_EXPORTS = {
    "best_summary": "best",
    "build_report": "page",
    "figures_for_dashboard": "page",
    "pareto_summary": "best",
    "report_file_name": "page",
    "report_sections": "page",
    "stored_sections": "page",
    "write_report": "page",
}
__all__ = sorted(_EXPORTS)
__getattr__ = exports(__name__, _EXPORTS)
