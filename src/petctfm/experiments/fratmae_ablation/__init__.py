"""The FratMAE ablation (``petctfm experiment fratmae-ablation``): the paper's Tables 2 and 3 on any harmonized
dataset (Oh et al. 2025, ``docs/fratmae.md``).

Modules: :mod:`.plan` (the runs and their names, the settings, the reproducing command), :mod:`.run`
(execution, resumable; :func:`~petctfm.experiments.fratmae_ablation.run.run_fratmae_ablation` is the entry
point), :mod:`.report` (statistics, ``results.csv``, ``results.md``, ``fratmae_ablation.png``). Run folders,
``done.json`` and the test-split prediction / evaluation folders follow ``label_efficiency``.

1. **Pretraining**, one run per variant (``pretrain_mae``, ``pretrain_mae_ca``, ``pretrain_fratmae-noca``,
   ``pretrain_fratmae``), seed = the first seed, ``--pretrain-steps`` each.
2. **Fine-tuning** (``finetune_{arm}_f{percent}_s{seed}``, ``--max-steps`` each, the same for every arm): at
   ``--fraction`` (default 20 %) no pretraining, MAE, MAE + ContextAlign, FratMAE w/o ContextAlign, FratMAE
   (Table 3) and no pretraining on axial stacks (Table 2, against no pretraining on coronal stacks); at each of
   ``--more-fractions`` (default 40, 100) no pretraining and FratMAE. No pretraining = the FratMAE segmenter
   with random weights. Each run predicts and evaluates the test split (``pred_test/``, ``eval_test/``).
3. **Staging** (``stage_{arm}_s{seed}``): the frozen encoder of each pretraining (no pretraining: the FratMAE
   network with random weights) on the central whole-body stack, MLP, early vs advanced.
4. **Report**: :mod:`.report`.
"""
