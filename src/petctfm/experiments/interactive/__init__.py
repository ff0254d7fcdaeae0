"""``petctfm experiment interactive``: a promptable model evaluated click by click (autoPET IV protocol,
corrective clicks), against a 41 %-of-SUVmax isocontour and an automatic model. Entry point:
:func:`petctfm.experiments.interactive.run.run_interactive`; docs/promptable.md."""
