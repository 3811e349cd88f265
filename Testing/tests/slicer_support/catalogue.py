"""A one-model test catalogue for the Logic tests (the scripted fake engine reads it)."""


def fake_segmentation_entry(model_id: str, labels: list) -> dict:
    """A schema-valid, single-MR-input segmentation entry whose weights do not exist (never downloaded)."""
    return {"id": model_id, "title": "Test hippocampus", "task": "segmentation", "version": "0.1",
            "inputs": [{"name": "image", "modality": "MR"}], "input_count": 1, "labels": labels,
            "spatial": {"spacing": [1, 1, 1], "orientation": "RAS"}, "source": {"location": "Models/none"},
            "sha256": "0" * 64, "size_bytes": 1000, "licence": "CC-BY-SA-4.0", "citation": "test",
            "memory_mb": 10, "verified": False}
