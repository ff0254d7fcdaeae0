"""The label-efficiency experiment: pretrained vs scratch at stored label fractions x seeds, plus k-shot probes."""
