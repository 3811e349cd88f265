"""One module per task: the engine run of that task from MRML nodes (``*Run`` classes, built on
``MedAISlicerLib.runs.EngineRun``) and the import of its results into nodes."""
