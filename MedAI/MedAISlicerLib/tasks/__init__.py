"""One module per task: the engine run of that task from MRML nodes (``*Run`` classes, built on
``MedAISlicerLib.runs.EngineRun``) and the import of its results into nodes.

Shared by the task runs: ``DEVICES`` (the choices the modules offer) and ``check_device`` (the
engine's own rule for a device name, so Slicer refuses exactly what ``medai --device`` refuses)."""

DEVICES = ("auto", "cuda", "cpu")


def check_device(device: str) -> str:
    """``device`` as the engine accepts it; ValueError with the engine's message otherwise."""
    import argparse

    from MedAILib.cli.batch import device_name

    try:
        return device_name(str(device))
    except argparse.ArgumentTypeError as e:
        raise ValueError(str(e)) from None


def check_volume_run(inputVolume, outputVolume, extraVolume=None, extraName: str = "reference") -> None:
    """What every volume-to-volume run checks first: an input, no input/``extraVolume`` under a
    transform (the engine would not see it), and an output that is neither of them."""
    from MedAISlicerLib import nodes

    if inputVolume is None:
        raise ValueError("Choose an input volume.")
    nodes.check_not_transformed(inputVolume)
    if extraVolume is not None:
        nodes.check_not_transformed(extraVolume)
    if outputVolume is not None and outputVolume in (inputVolume, extraVolume):
        raise ValueError(f"The output volume must differ from the input and {extraName} volumes.")
