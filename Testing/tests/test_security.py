"""Security (issue 9, item 3): untrusted bundle configs never evaluated, weights only through
``weights_only=True``, zip AND tar packs cannot write outside the cache, credentials in URLs never
shown, DICOM patient name/ID never in logs, reports or messages.

Already covered elsewhere (not repeated here):
- trust refused / edited config untrusted again / malicious pickle refused: test_bundles.py
- HTTPS only except loopback and explicit mirrors, zip path escapes and links: test_downloads.py
"""

import ast
import contextlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bundle_factory import make_bundle, zip_bundle
from MedAILib.models import download
from MedAILib.models.bundle import load_bundle, resolve_model
from MedAILib.models.catalogue import load_catalogue
from MedAILib.cli import main
from MedAILib.core.errors import DownloadError, ModelError

REPO = Path(__file__).resolve().parents[2]
PATIENT_NAME, PATIENT_ID = "DOE^JANE", "PAT-12345"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def medai(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


# --- a config that would run code is never evaluated before trust ------------------------------------

def _booby_trapped_bundle(folder: Path, marker: Path) -> Path:
    """A bundle whose config runs ``os.system('touch MARKER')`` when evaluated (in `imports`, and in
    network_def, which still returns a working network so the trusted control run is a real run)."""
    make_bundle(folder)
    cfg_path = folder / "configs" / "inference.json"
    cfg = json.loads(cfg_path.read_text())
    touch = f"__import__('os').system('touch {marker}')"
    cfg["imports"] = cfg.get("imports", []) + [f"${touch}"]
    net = {k: v for k, v in cfg["network_def"].items() if k != "_target_"}
    kwargs = ", ".join(f"{k}={v!r}" for k, v in net.items())
    cfg["network_def"] = f"${touch} or monai.networks.nets.UNet({kwargs})"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return folder


def test_untrusted_config_expression_is_never_evaluated(tmp_path):
    marker = tmp_path / "PWNED"
    bundle = _booby_trapped_bundle(tmp_path / "trap", marker)
    img = tmp_path / "x.nii.gz"
    from MedAILib.io import write_image
    from MedAILib.core.volume import Volume

    write_image(Volume(np.random.default_rng(0).normal(50, 10, (12, 14, 16)).astype(np.float32), np.eye(4)), img)
    # every way in refuses before the config is read as code
    with pytest.raises(ModelError, match="refusing to run bundle"):
        load_bundle(bundle)
    with pytest.raises(ModelError, match="refusing to run bundle"):
        resolve_model(str(bundle))
    r = medai("segment", img, "-o", tmp_path / "out.seg.nrrd", "--model", bundle, "--progress", "none")
    assert r.returncode == 2 and "--trust" in r.stderr
    # importing it as a pack installs it untrusted, still without evaluating anything
    model_id, folder, trusted = download.import_pack(zip_bundle(bundle, tmp_path / "trap.zip"), load_catalogue())
    assert not trusted
    with pytest.raises(ModelError, match="refusing to run bundle"):
        resolve_model(str(folder))
    # `models add` describes it (reads JSON, counts expressions) and the user says no
    from MedAILib.models import modelzoo

    with pytest.raises(ModelError, match="did not trust"):
        modelzoo.add_bundle(str(bundle), ask=lambda prompt: "n", say=lambda text: None)
    assert not marker.exists(), "an untrusted bundle's config expression was evaluated"
    assert not (tmp_path / "out.seg.nrrd").exists()
    # control: once trusted, the same config does run (so the checks above could have failed)
    r = medai("segment", img, "-o", tmp_path / "out.seg.nrrd", "--model", bundle, "--trust", bundle,
              "--progress", "none")
    assert r.returncode == 0, r.stderr
    assert marker.exists()


# --- weights: only weights_only=True -------------------------------------------------------------------

def _python_files():
    roots = [REPO / "MedAI", REPO / "MedAISegment"] + [p for p in REPO.glob("MedAI*") if p.is_dir()]
    seen = set()
    for root in roots:
        for f in root.rglob("*.py"):
            if f not in seen and "__pycache__" not in f.parts:
                seen.add(f)
                yield f


def _unsafe_loads(tree):
    """(line, reason) for torch.load without weights_only=True, pickle/dill/joblib loads, np.load(allow_pickle=True)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        kw = {k.arg: k.value for k in node.keywords}
        name = node.func.attr
        if owner == "torch" and name == "load":
            wo = kw.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                yield node.lineno, "torch.load without weights_only=True"
        elif owner in ("pickle", "dill", "joblib", "cloudpickle") and name in ("load", "loads"):
            yield node.lineno, f"{owner}.{name}"
        elif owner in ("np", "numpy") and name == "load":
            ap = kw.get("allow_pickle")
            if isinstance(ap, ast.Constant) and ap.value is True or (ap is not None and not isinstance(ap, ast.Constant)):
                yield node.lineno, "np.load(allow_pickle=...)"


def test_no_weights_load_without_weights_only():
    bad, n_torch_loads = [], 0
    for f in _python_files():
        text = f.read_text(encoding="utf-8")
        n_torch_loads += text.count("torch.load(")
        for line, why in _unsafe_loads(ast.parse(text, filename=str(f))):
            bad.append(f"{f.relative_to(REPO)}:{line}: {why}")
    assert n_torch_loads >= 3, "the scan found no torch.load calls: is it looking in the right place?"
    assert bad == [], "unsafe deserialisation:\n" + "\n".join(bad)


def test_scanner_flags_unsafe_calls():
    """The scan itself: it must catch the patterns it exists for."""
    src = ("import torch, pickle, numpy as np\n"
           "torch.load(p)\n"
           "torch.load(p, weights_only=False)\n"
           "torch.load(p, weights_only=flag)\n"
           "pickle.loads(b)\n"
           "np.load(p, allow_pickle=True)\n"
           "torch.load(p, map_location='cpu', weights_only=True)\n"
           "np.load(p)\n")
    assert [line for line, _ in _unsafe_loads(ast.parse(src))] == [2, 3, 4, 5, 6]


def test_training_checkpoint_loader_refuses_code_but_keeps_rng_state(tmp_path):
    """Resume checkpoints hold numpy RNG state; they load with weights_only=True, and a planted
    pickle that runs code is refused."""
    import random
    import pickle

    import torch

    from MedAILib.models.checkpoints import load_checkpoint

    ok = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.ones(2)}, "numpy_rng": np.random.get_state(), "python_rng": random.getstate(),
                "torch_rng": torch.get_rng_state(), "state": {"epoch": 3, "best": 0.5}}, ok)
    c = load_checkpoint(ok)
    np.random.set_state(c["numpy_rng"])
    assert c["state"]["epoch"] == 3 and torch.equal(c["model"]["w"], torch.ones(2))

    marker = tmp_path / "RAN"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(evil)
    assert not marker.exists()


# --- packs: zip and tar stay inside the cache ----------------------------------------------------------

def _tar_with(path: Path, members) -> Path:
    """members: [(TarInfo, bytes or None)]"""
    with tarfile.open(path, "w:gz") as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_tar_pack_imports_like_a_zip(tmp_path, home):
    bundle = make_bundle(tmp_path / "b")
    pack = tmp_path / "mybundle.tar.gz"
    with tarfile.open(pack, "w:gz") as t:
        t.add(bundle, arcname="mybundle")
    r = medai("models", "import", pack)
    assert r.returncode == 0, r.stderr
    folder = home / "models" / "mybundle"
    assert (folder / "configs" / "inference.json").is_file() and (folder / "models" / "model.pt").is_file()
    assert "--trust" in r.stderr  # not a catalogue model: installed, but not trusted
    with pytest.raises(ModelError, match="refusing to run bundle"):
        resolve_model(str(folder))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "fifo", "chardev"])
def test_tar_pack_cannot_write_outside_the_cache(tmp_path, home, kind):
    outside = tmp_path / "escaped.txt"
    members = [_file("b/configs/inference.json", b"{}")]
    if kind == "dotdot":
        members.append(_file("b/../../../escaped.txt"))
    elif kind == "absolute":
        members.append(_file(str(outside)))
    else:
        info = tarfile.TarInfo("b/configs/evil")
        info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE,
                     "chardev": tarfile.CHRTYPE}[kind]
        info.linkname = str(outside) if kind in ("symlink", "hardlink") else ""
        members.append((info, None))
    if kind == "symlink":  # the classic two-step escape: a link, then a file written through it
        members.append(_file("b/configs/evil/../../escaped.txt"))
    pack = _tar_with(tmp_path / f"{kind}.tar.gz", members)
    with pytest.raises(ModelError, match="outside the cache|link|special file"):
        download.import_pack(pack, load_catalogue())
    assert not outside.exists() and not (home / "escaped.txt").exists()
    models = home / "models"
    assert not models.exists() or list(models.iterdir()) == [], "a refused pack left files in the cache"
    r = medai("models", "import", pack)  # the CLI says it in one line
    assert r.returncode == 2 and "refusing the pack" in r.stderr and "Traceback" not in r.stderr


def test_zip_pack_dotdot_through_cli_leaves_nothing(tmp_path, home):
    """Complements test_downloads (which calls import_pack): the CLI path, and no staging folder left."""
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("configs/inference.json", "{}")
        zf.writestr("../../escaped.txt", "x")
    r = medai("models", "import", evil)
    assert r.returncode == 2 and "outside the cache" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "escaped.txt").exists()
    assert not (home / "models").exists() or list((home / "models").iterdir()) == []


# --- credentials in URLs ------------------------------------------------------------------------------

def test_credentials_in_urls_are_redacted(tmp_path):
    assert download.redact_url("https://alice:s3cret@mirror.example.org/m.zip") == "https://***@mirror.example.org/m.zip"
    assert download.redact_url("https://mirror.example.org/m.zip") == "https://mirror.example.org/m.zip"
    with pytest.raises(DownloadError) as e:  # refused scheme
        download.check_url("http://alice:s3cret@mirror.example.org/m.zip")
    assert "s3cret" not in str(e.value) and "alice" not in str(e.value) and "mirror.example.org" in str(e.value)
    with pytest.raises(DownloadError) as e:  # unreachable (loopback port with nothing listening)
        download.download_file("http://alice:s3cret@127.0.0.1:9/m.zip", tmp_path / "m.zip", "0" * 64,
                               show_bar=False, timeout=2)
    assert "s3cret" not in str(e.value) and "alice" not in str(e.value)
    # and through the CLI with a mirror holding credentials
    r = medai("models", "download", "nonexistent-model-id", "--mirror", "https://alice:s3cret@127.0.0.1:9")
    assert r.returncode != 0 and "s3cret" not in r.stderr + r.stdout


# --- no patient identifiers in logs, messages or reports ----------------------------------------------

def _dicom_series(folder: Path, n=8, rows=20, cols=22) -> Path:
    """A small MR series with a planted patient name and ID (fictional)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"IM{k:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
        ds.PatientBirthDate, ds.OtherPatientIDs = "19700101", PATIENT_ID + "-B"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.SeriesDescription, ds.InstanceNumber = "MR", "T1 test", k + 1
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = rng.normal(300, 60, (rows, cols)).astype(np.int16).tobytes()
        ds.save_as(str(folder / f"IM{k:04d}.dcm"), enforce_file_format=True)
    assert pydicom.dcmread(str(folder / "IM0000.dcm")).PatientName == PATIENT_NAME
    return folder


def _assert_no_phi(text: str, where: str):
    for s in (PATIENT_NAME, PATIENT_ID, "DOE", "JANE", "19700101"):
        assert s not in text, f"patient identifier {s!r} appears in {where}"


def test_patient_name_and_id_never_logged(tmp_path, caplog):
    """`medai info` and `medai segment --progress json --debug` on a series with a planted name/ID:
    neither appears in stdout, stderr, any log record (all loggers at DEBUG, what --debug prints),
    the reports, or MedAI's home folder. In-process: a subprocess per command costs ~15 s of imports."""
    import logging

    caplog.set_level(logging.DEBUG)
    series = _dicom_series(tmp_path / "series")
    bundle = make_bundle(tmp_path / "bundle")
    runs = [medai("info", series, "--debug"), medai("info", series, "--json"),
            medai("segment", series, "-o", tmp_path / "out", "--model", bundle, "--trust", bundle,
                  "--progress", "json", "--debug", "--report", tmp_path / "report.json"),
            medai("segment", series, "-o", tmp_path / "out2", "--model", bundle, "--report", tmp_path / "report.csv",
                  "--progress", "bar")]
    assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
    assert "T1 test" in runs[0].stdout and '"MR"' in runs[1].stdout  # it did read the series' tags
    events = [json.loads(l) for l in runs[2].stdout.splitlines() if l.startswith("{")]
    assert events[-1]["event"] == "done" and len(events[-1]["outputs"]) == 1
    assert len(caplog.records) > 0  # debug logging was on and captured
    for n, r in enumerate(runs):
        _assert_no_phi(r.stdout, f"stdout of run {n}")
        _assert_no_phi(r.stderr, f"stderr of run {n}")
    _assert_no_phi("\n".join(f"{r.name}: {r.getMessage()}" for r in caplog.records), "the log records")
    for f in [tmp_path / "report.json", tmp_path / "report.csv", *(tmp_path / "home").rglob("*")]:
        if f.is_file():
            _assert_no_phi(f.read_text(errors="replace"), str(f))
    # an error about a damaged file of the series does not name the patient either
    (series / "IM0003.dcm").write_bytes(b"garbage")
    r = medai("segment", series, "-o", tmp_path / "out3", "--model", bundle, "--progress", "json")
    _assert_no_phi(r.stdout + r.stderr, "error output")
    _assert_no_phi("\n".join(r.getMessage() for r in caplog.records), "the log records")


# --- issue 14: one redaction function for every message, event, log and report ------------------------

def test_redact_removes_credentials_in_every_form(monkeypatch):
    from MedAILib.core.errors import DownloadError
    from MedAILib.core.redact import redact, redact_obj

    monkeypatch.setenv("MEDAI_MIRROR", "https://alice:S3cretPW@mirror.example")
    cases = [
        "https://alice:S3cretPW@mirror.example/m.zip",
        "InvalidURL: nonnumeric port: 'S3cretPW@mirror.example'",  # what urllib says for a URL without port
        "auth failed for alice:S3cretPW",
        "GET https://x.example/m.zip?token=abc123&X-Amz-Signature=deadbeef",
        "Authorization: Basic YWxpY2U6UzNjcmV0UFc=",
        "ftp://bob:hunter22@host/x",
    ]
    for text in cases:
        out = redact(text)
        for secret in ("S3cretPW", "alice:", "abc123", "deadbeef", "YWxpY2U6UzNjcmV0UFc", "hunter22", "bob:"):
            assert secret not in out, (text, out)
    assert redact("https://mirror.example/m.zip") == "https://mirror.example/m.zip"  # nothing to hide
    assert redact_obj({"event": "error", "message": ["x S3cretPW"], "n": 3}) == {"event": "error", "message": ["x ***"],
                                                                                  "n": 3}
    e = DownloadError("cannot reach https://alice:S3cretPW@mirror.example", "check S3cretPW")
    assert "S3cretPW" not in str(e) + e.message + e.hint


@pytest.mark.parametrize("how", ["env", "flag"])
def test_mirror_password_without_port_never_shown(how, monkeypatch):
    """The issue's example: no port, so urllib used to fail with "nonnumeric port: 'S3cretPW@...'"
    (an internal error quoting the password). Now the credentials go as Basic auth and the
    (unreachable) mirror is named without them."""
    url = "https://alice:S3cretPW@mirror.invalid"
    if how == "env":
        monkeypatch.setenv("MEDAI_MIRROR", url)
        r = medai("models", "download", "spleen_ct_segmentation")
    else:
        r = medai("models", "download", "spleen_ct_segmentation", "--mirror", url)
    assert r.returncode != 0 and "cannot reach https://***@mirror.invalid/" in r.stderr, r.stderr
    assert "S3cretPW" not in r.stdout + r.stderr and "alice" not in r.stdout + r.stderr
    assert "internal error" not in r.stderr


def test_mirror_credentials_are_sent_as_basic_auth(tmp_path):
    """Credentials in a mirror URL work (sent as an Authorization header to a server on 127.0.0.1),
    and a wrong password is reported without showing it."""
    import base64
    import hashlib
    import http.server
    import threading

    payload = b"model bytes" * 100
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"alice:S3cretPW").decode():
                self.send_response(401)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        port = httpd.server_address[1]
        sha = hashlib.sha256(payload).hexdigest()
        out = download.download_file("https://models.example/m.zip", tmp_path / "m.zip", sha, show_bar=False,
                                     mirror=f"http://alice:S3cretPW@127.0.0.1:{port}")
        assert out.read_bytes() == payload and seen[-1].startswith("Basic ")
        with pytest.raises(DownloadError) as e:
            download.download_file("https://models.example/m.zip", tmp_path / "n.zip", sha, show_bar=False,
                                   mirror=f"http://alice:WrongPW99@127.0.0.1:{port}")
        assert "HTTP 401" in str(e.value) and "WrongPW99" not in str(e.value) and "alice" not in str(e.value)
    finally:
        httpd.shutdown()


def test_internal_errors_are_redacted_too(monkeypatch, capsys):
    """The CLI's last resort (an unexpected exception) goes through the same redaction."""
    from MedAILib.cli import main
    from MedAILib.cli import models as models_cli

    monkeypatch.setenv("MEDAI_MIRROR", "https://alice:S3cretPW@mirror.example")

    def boom(args):
        raise RuntimeError("failed talking to https://alice:S3cretPW@mirror.example (S3cretPW@mirror.example)")

    monkeypatch.setattr(models_cli, "run", boom)
    assert main(["models", "list"]) == 1
    err = capsys.readouterr().err
    assert "internal error" in err and "S3cretPW" not in err and "alice" not in err


def test_log_lines_are_redacted(monkeypatch):
    """The CLI installs the redacting filter on the log handlers: a library logging a URL with
    credentials (at any level, with %-arguments) writes it without them."""
    import logging

    from MedAILib.core.redact import install_log_redaction

    monkeypatch.setenv("MEDAI_MIRROR", "https://alice:S3cretPW@mirror.example")
    stream = io.StringIO()
    logger = logging.getLogger("medai-test-redaction")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        install_log_redaction(logger)
        logger.warning("fetching %s (%s)", "https://alice:S3cretPW@mirror.example/m.zip", "S3cretPW@mirror.example")
    finally:
        logger.removeHandler(handler)
    assert "https://***@mirror.example/m.zip" in stream.getvalue() and "S3cretPW" not in stream.getvalue()


def test_events_and_report_rows_are_redacted(tmp_path, monkeypatch):
    """A credential that reaches a case's error (here: the literal password of MEDAI_MIRROR inside a
    file name) is masked in the JSON events and in the --report, not only on stderr."""
    from MedAILib.core import events

    monkeypatch.setenv("MEDAI_MIRROR", "https://alice:S3cretPW@mirror.invalid")
    line = events.encode("error", message="cannot reach https://bob:Hunter22@host.example/x", path="S3cretPW.nii")
    assert "Hunter22" not in line and "S3cretPW" not in line and "***" in line
    bad = tmp_path / "scan_S3cretPW.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    report = tmp_path / "report.json"
    r = medai("segment", str(bad), "-o", str(tmp_path / "out"), "--progress", "json", "--report", str(report))
    assert r.returncode != 0
    assert report.is_file() and "S3cretPW" not in report.read_text() and "***" in report.read_text()
    assert "S3cretPW" not in r.stdout + r.stderr
