"""Self-supervised pre-training on unlabelled volumes (``medai pretrain``); see :mod:`ssl`."""
