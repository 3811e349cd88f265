"""``medai segment`` on DICOM studies: each study (StudyInstanceUID) found in the input folders is a
case, and each model input is fed by the series :mod:`.series_choice` picks (or ``--series`` names).

Study mode applies when an input folder holds more than one DICOM series; a folder with a single
series stays one input as before (several such folders, in the model's input order, feed a
multi-input model). Studies of different patients are separate cases by construction; one study whose
series belong to several patients is refused (:func:`MedAILib.io.dicom.list_dicom_studies`).
"""

from __future__ import annotations

from pathlib import Path

from MedAILib.core.errors import InputError


def _is_dicom_folder(path: Path, image_suffixes) -> bool:
    from MedAILib.core.atomic import full_suffix

    if not path.is_dir():
        return False
    return not any(f.is_file() and full_suffix(f).lower() in image_suffixes for f in path.iterdir())


def find_studies(inputs, image_suffixes) -> list:
    """The DicomStudy list when some input is a DICOM folder with several series (study mode),
    else [] (the ordinary case rule applies). Mixing study folders with other inputs is refused."""
    from MedAILib.io.dicom import list_dicom_series, group_studies, check_one_patient

    paths = [Path(p) for p in inputs]
    dicom = [p for p in paths if _is_dicom_folder(p, image_suffixes)]
    listed = {p: list_dicom_series(p) for p in dicom}
    if not any(len(v) > 1 for v in listed.values()):
        return []
    others = [p for p in paths if p not in listed]
    if others:
        raise InputError(f"{others[0]} is not a DICOM folder, but {next(p for p, v in listed.items() if len(v) > 1)} "
                         "holds DICOM studies", "run image files and DICOM study folders in separate commands")
    studies = []
    for p, series in listed.items():
        if not series:
            raise InputError(f"no DICOM series found in {p}", "check that the folder holds DICOM files")
        found = group_studies(series)
        for st in found:
            check_one_patient(st.series, f"study {st.name} ({st.uid or 'no StudyInstanceUID'}) in {p}")
        studies += found
    seen = {}
    for st in studies:  # two studies in one folder: tell them apart by their UID's end
        seen.setdefault(st.name, []).append(st)
    for name, group in seen.items():
        if len(group) > 1:
            for st in group:
                st.folder_name = f"{name}_{(st.uid or 'study')[-8:].replace('.', '')}"
    return studies


def study_name(study) -> str:
    return getattr(study, "folder_name", None) or study.name


def study_cases(studies: list) -> list:
    """batch.Case per study (inputs: the study's folder, so outputs are never written inside it)."""
    from MedAILib.cli.batch import Case

    patients = {st.patient_key for st in studies}
    cases = [Case(i, study_name(st), [Path(st.folder)], study_name(st)) for i, st in enumerate(studies)]
    return cases, len(patients)


def read_study(study, inputs: list, profile=None, overrides=None, log=None) -> tuple:
    """(volumes in the model's input order, series records for the report) of one study."""
    from MedAILib.io.dicom import read_series
    from MedAILib.tasks.segmentation.series_choice import choose_series

    choices = choose_series(study, inputs, profile=profile, overrides=overrides, log=log)
    volumes = [read_series(c.series) for c in choices]
    for c, v in zip(choices, volumes):
        v.metadata["input_name"] = c.input_name
    return volumes, [c.record() for c in choices]
