"""Evaluation metrics: one module per task (classification, segmentation, image similarity)."""
