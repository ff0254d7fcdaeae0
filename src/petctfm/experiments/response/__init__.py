"""``petctfm experiment response``: treatment-response accuracy on follow-up phantoms (issue 27).

Every pair of ``petctfm synth --followup`` (``PAIRS/<pair>/{baseline,followup}/`` + ``response_truth.json``)
goes through :func:`petctfm.response.api.assess_response`, with the lesion and organ masks of the phantom
(``--masks truth``: only the response logic and the measurement are tested) or with a lesion model's predictions
(``--model RUN``, optional ``--organs RUN``); the result is compared with the truth: PERCIST category accuracy
(bootstrap and exact binomial CIs) and confusion matrix, lesion-matching F1 against the truth correspondence
(matched, disappeared, new), and the SULpeak % change error (hottest lesion and per matched lesion).

``plan.py`` (settings, checks), ``truth.py`` (predict-like folders from the truth masks), ``scoring.py`` (one pair
against its truth), ``report.py`` (summary.json, pairs.csv, results.md, the figure), ``run.py``
(:func:`run.run_response_experiment`). See docs/response.md.
"""
