"""The label-efficiency experiment (``petctfm experiment label-efficiency``): does pretraining save labels?

Modules: :mod:`.plan` (the runs, their names and stored subsets, the settings), :mod:`.run` (execution,
resumable: :func:`~petctfm.experiments.label_efficiency.run.run_label_efficiency` is the entry point),
:mod:`.report` (statistics, ``results.csv``, ``results.md``, the plot).

The seeds' claim: a PET/CT model pretrained self-supervised and fine-tuned on 10% of the labeled training
cases reaches the test Dice of the same network trained from scratch on 100%, and in 5-shot linear probing
a jointly (PET+CT) pretrained encoder beats "separated" PET-only + CT-only encoders. This package runs that
comparison on any harmonized dataset and reports it like the seed tables (FratMAE: Dice with 95% bootstrap
CIs, 1,000 resamples).

The method, top to bottom:

1. **Plan** (:func:`.plan.build_plan`): a list of :class:`PlannedRun`, each with a stable name that is also its
   folder in the experiment directory:

   - ``finetune_{arm}_f{percent}_s{seed}`` for arm ``pretrained`` (encoder of the pretraining run) or
     ``scratch`` (random weights, the pretraining run's backbone, model overrides and input mode), at each
     stored label fraction ``splits.json["fractions"][percent]`` (default 10, 20, 40, 100) and each seed;
     or exactly the ``(arm, percent)`` pairs given as ``runs`` (``--runs pretrained:10,scratch:100``);
   - ``probe_joint_k{K}_s{seed}`` (the pretraining run's frozen encoder) and ``probe_separated_k{K}_s{seed}``
     (a PET-only and a CT-only pretraining run side by side), 5-shot by default (``splits.json["kshot"]``).

   Every run records the exact stored subset it trains on (``cases``), resolved once, from splits.json.
2. **Fine-tuning runs** call the fine-tuning API :func:`petctfm.methods.segmentation.api.finetune` (what
   ``petctfm finetune`` calls; keyword arguments from :func:`~.run.finetune_kwargs`), which trains a
   :class:`~petctfm.methods.segmentation.task.FinetuneTask` with the generic trainer (best checkpoint
   by val Dice). The best checkpoint predicts the **test** split
   (:func:`petctfm.predict.split.predict_split`, NIfTI) and :func:`petctfm.evaluate.evaluate_folder`
   scores it (per-case CSV, summary with bootstrap CIs, plot in ``RUN/eval_test/``).
3. **Probe runs** use :func:`petctfm.methods.probe.run_probe`, which trains the linear head and computes the
   test per-case metrics in memory with the same :func:`petctfm.evaluate.metrics.case_metrics`; those rows
   go through :func:`petctfm.evaluate.build_result` / ``write_report`` into the same ``RUN/eval_test/``.
4. **Resume**: a run is finished when ``RUN/done.json`` exists (written atomically, last, after predictions
   and evaluation); finished runs are skipped. A fine-tuning run whose training ended (``summary.json``
   with ``stopped`` = ``max_steps`` / ``max_time``) is only predicted and evaluated again; one with
   checkpoints but no finished training (killed) continues with the trainer's exact resume. Probes are
   short and restart. The experiment's settings and plan are ``EXP_DIR/experiment.yaml``; a directory
   holding an experiment with other settings is refused.
5. **Results** (:func:`.report.summarize`, :func:`.report.write_results`): per run, the mean test Dice with a percentile
   bootstrap 95% CI over test cases (1,000 resamples, seed 0), FP / FN volume (autoPET), lesion F1. Per arm
   and fraction over seeds: per-case Dice averaged over seeds, its mean with a bootstrap CI over cases, and
   the SD of the per-seed means. Paired Wilcoxon signed-rank tests (over test cases, seed-averaged Dice):
   pretrained vs scratch at each fraction, and pretrained at the smallest fraction vs scratch at 100%
   (the seeds' headline). ``results.csv``, ``results.md``, ``label_efficiency.png`` (Dice vs label fraction,
   log-x, CI bands; probes in a second panel).

All data in petctfm is synthetic; ``results.md`` says so.
"""
