"""``petctfm experiment metabolic-network``: the whole-body metabolic covariance network of SegAnyPET (Zhang et
al., Fig. 4c): organ-to-organ correlations of uptake across patients.

Per patient, the SUVmean of each organ (lesion voxels excluded; :func:`petctfm.evaluate.organs.organ_suv_means`)
from the ground-truth organ maps of a harmonized dataset or the organ maps an organ model predicts on it
(``--model``), or from per-case ``organs.csv`` tables (``--tables``); log-transformed, residualized on covariates and
z-scored; Pearson and Ledoit-Wolf partial correlation with FDR-corrected edges; a network per group, per-edge
group differences by permutation, bootstrap edge stability, and a null check on random splits.

``plan.py`` (settings, checks, the command line), ``uptake.py`` (the cohort table), ``stats.py`` (the
statistics), ``report.py`` (CSVs, figures, results.md), ``run.py`` (:func:`run.run_metabolic_network`).
See docs/metabolic-network.md.
"""
