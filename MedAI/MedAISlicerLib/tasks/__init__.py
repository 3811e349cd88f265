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
