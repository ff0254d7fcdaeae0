"""petctfm.evaluate: segmentation metrics (autoPET style), per-lesion statistics and evaluation reports.

- :func:`case_metrics` (metrics.py): Dice, IoU, sensitivity, precision, autoPET FP/FN volume, lesion-wise
  detection, TMTV and TLG errors for one case.
- :func:`lesion_table`, :func:`summary`, :func:`label_lesions` (lesions.py): one row per lesion with volume,
  SUVmax/mean/peak, TLG, LPS centroid, bounding box; patient totals (used by ``petctfm predict``).
- :func:`mean_ci`, :func:`paired_comparison`, :func:`aggregate` (bootstrap.py): bootstrap CIs, Wilcoxon.
- :func:`evaluate_folder`, :func:`build_result`, :func:`write_report` (report.py): folders in, report out.

See docs/evaluate.md.
"""

from petctfm.evaluate.bootstrap import aggregate, mean_ci, paired_comparison
from petctfm.evaluate.lesions import label_lesions, lesion_table, summary
from petctfm.evaluate.metrics import CASE_METRICS, case_metrics
from petctfm.evaluate.report import build_result, evaluate_folder, write_report

__all__ = [
    "CASE_METRICS", "case_metrics", "label_lesions", "lesion_table", "summary", "mean_ci", "paired_comparison",
    "aggregate", "evaluate_folder", "build_result", "write_report",
]
