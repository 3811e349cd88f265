"""Logic helpers of the MedAIFusion module: ``runs`` holds the engine runs (``medai register`` /
``medai fuse`` in a separate process) and their import into MRML nodes."""
