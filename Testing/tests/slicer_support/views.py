"""What the slice views show, read from real Slicer's slice composite nodes (one per view: Red,
Yellow, Green), which is where ``slicer.util.setSliceViewerLayers`` puts the layers."""


def layers(view: str = "Red") -> dict:
    import slicer

    composite = slicer.mrmlScene.GetNodeByID(f"vtkMRMLSliceCompositeNode{view}")
    assert composite is not None, f"no slice view {view}"
    return {"background": composite.GetBackgroundVolumeID(), "foreground": composite.GetForegroundVolumeID(),
            "foregroundOpacity": composite.GetForegroundOpacity(), "label": composite.GetLabelVolumeID()}


def same_in_every_view() -> dict:
    shown = [layers(v) for v in ("Red", "Yellow", "Green")]
    assert shown[0] == shown[1] == shown[2], shown
    return shown[0]
