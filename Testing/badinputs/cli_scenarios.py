"""Hostile CLI scenarios (issue 14): names that climb out of the cache, tampered trusted bundles,
decompression bombs, credentials in URLs, damaged MedAI files and faults, and images a model would
answer nonsense on. Each scenario builds its files (and its own MEDAI_HOME), runs one ``medai``
command in a subprocess and is judged on what a person and their files see:

- exit status and ONE error line naming the file and the cause (or, for ``warn``/``ok``
  scenarios, exit 0 with the expected text);
- inputs byte-identical afterwards, every file of MEDAI_HOME still there and unchanged (except
  MedAI's own ``cache/`` of validation markers), no output (partial or stale) where none belongs;
- no secret in stdout, stderr or any file the run wrote; no untrusted code ran (a marker file).

The same scenarios run against any checkout (``run(..., code=<checkout>/MedAI, legacy=True)``):
``python Testing/badinputs/cli_scenarios.py --code /tmp/old/MedAI --legacy`` gives the counts per
family for the code before issue 14. Families: names, trust, limits, credentials, errors, sanity.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import hashlib
import io
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "Testing" / "tests"))  # bundle_factory
sys.path.insert(0, str(HERE))

SECRET, USER = "S3cretPW", "alice"
FAMILIES = ("names", "trust", "limits", "credentials", "errors", "sanity")
ACCEPT = "--accept-input-warnings"


@dataclasses.dataclass
class Run:
    """What one scenario runs and what must hold afterwards (paths are absolute)."""
    args: list
    env: dict = dataclasses.field(default_factory=dict)
    inputs: list = dataclasses.field(default_factory=list)   # must stay byte-identical (files or folders)
    absent: list = dataclasses.field(default_factory=list)   # must not exist afterwards (outputs, markers)
    setup: list = dataclasses.field(default_factory=list)    # medai commands run first (same code), must succeed
    after_setup: Optional[Callable] = None                   # then this (tamper with what setup made)
    fault: str = ""                                          # fault injected in the medai process (WRAPPER)
    unprivileged: bool = False                               # run without root's permission override
    memory_limit_mb: int = 0                                 # address-space limit of the medai process
    secrets: tuple = ()                                      # strings that must appear nowhere
    scan: list = dataclasses.field(default_factory=list)     # files to search for secrets too
    cleanup: Optional[Callable] = None
    may_change: list = dataclasses.field(default_factory=list)  # MEDAI_HOME paths the command may change
    legacy_args: Optional[list] = None                       # the same request for code without new flags


@dataclasses.dataclass
class Scenario:
    name: str
    family: str
    expect: str      # "refuse" | "warn" | "ok"
    message: str     # substring of the error line (refuse) or of the output (warn/ok)
    what: str
    build: Callable  # build(folder: Path, home: Path) -> Run


SCENARIOS: list = []


def scenario(name, family, expect, message, what):
    assert family in FAMILIES and expect in ("refuse", "warn", "ok")

    def deco(fn):
        SCENARIOS.append(Scenario(name, family, expect, message, what, fn))
        return fn

    return deco


# --- helpers that build inputs ------------------------------------------------------------------
def _corpus():
    import corpus  # the image helpers of the main corpus (mr_like, write_sitk, dicom_series)

    return corpus


def good_image(path: Path, shape=(24, 32, 28)) -> Path:
    return _corpus().write_sitk(_corpus().mr_like(shape), path, compress=str(path).endswith(".gz"))


def bundle(folder: Path, with_scripts: bool = True) -> Path:
    """A small random-weight MONAI bundle (Testing/tests/bundle_factory.py)."""
    from bundle_factory import make_bundle

    return make_bundle(folder, with_scripts=with_scripts, roi_size=(16, 16, 16), sw_batch_size=1)


def zip_folder(folder: Path, path: Path, top: str = "") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                arc = f.relative_to(folder).as_posix()
                z.write(f, f"{top}/{arc}" if top else arc)
    return path


def home_marker(home: Path) -> None:
    """Files a MEDAI_HOME holds, so that losing it shows: an installed model, a download, a trust store."""
    (home / "models" / "keep_model" / "configs").mkdir(parents=True, exist_ok=True)
    (home / "models" / "keep_model" / "configs" / "inference.json").write_text("{}")
    (home / "downloads").mkdir(exist_ok=True)
    (home / "downloads" / "keep_model.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    (home / "notes.txt").write_text("the user's own file in MEDAI_HOME\n")


def nifti_bomb(path: Path, shape_ijk, dtype=np.uint8, chunk_mb: int = 64) -> Path:
    """A .nii.gz announcing ``shape_ijk`` of zeros: header + the same compressed block of zeros
    repeated (gzip members concatenate), so a 2 GiB image costs ~2 MB and no memory to build."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape_ijk)
    hdr.set_data_dtype(dtype)
    hdr.set_zooms((1.0,) * len(shape_ijk))
    hdr["vox_offset"] = 352
    hdr.set_qform(np.eye(4), 1)
    hdr.set_sform(np.eye(4), 1)
    head = hdr.binaryblock + b"\0\0\0\0"
    total = int(np.prod(shape_ijk)) * np.dtype(dtype).itemsize
    block = chunk_mb << 20
    member = gzip.compress(bytes(block), compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(head))
        full, rest = divmod(total, block)
        for _ in range(full):
            f.write(member)
        if rest:
            f.write(gzip.compress(bytes(rest), compresslevel=1))
    return path


def nrrd_bomb(path: Path, sizes_ijk, kind="short", seg=False) -> Path:
    """A gzip NRRD (or .seg.nrrd) announcing ``sizes_ijk`` voxels of zeros, built without the memory."""
    itemsize = {"short": 2, "uchar": 1, "float": 4}[kind]
    total = int(np.prod(sizes_ijk)) * itemsize
    head = (f"NRRD0004\ntype: {kind}\ndimension: 3\nspace: left-posterior-superior\nsizes: "
            f"{' '.join(map(str, sizes_ijk))}\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nkinds: domain domain domain\n"
            + ("endian: little\n" if itemsize > 1 else "") + "encoding: gzip\nspace origin: (0,0,0)\n")
    if seg:
        head += "Segment0_ID:=Segment_1\nSegment0_LabelValue:=1\nSegment0_Layer:=0\nSegment0_Name:=bomb\n"
    block = 64 << 20
    member = gzip.compress(bytes(block), compresslevel=9)
    with open(path, "wb") as f:
        f.write((head + "\n").encode())
        full, rest = divmod(total, block)
        for _ in range(full):
            f.write(member)
        if rest:
            f.write(gzip.compress(bytes(rest), compresslevel=1))
    return path


def write_nrrd_direction(path: Path, array_kji, directions, spacing_note="") -> Path:
    """An NRRD with the given space directions (columns may be non-orthogonal: a sheared grid)."""
    a = np.ascontiguousarray(array_kji.astype(np.float32))
    k, j, i = a.shape
    vec = " ".join("(" + ",".join(repr(float(x)) for x in d) + ")" for d in directions)
    head = (f"NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: {i} {j} {k}\n"
            f"space directions: {vec}\nkinds: domain domain domain\nendian: little\nencoding: raw\n"
            "space origin: (0,0,0)\n\n")
    with open(path, "wb") as f:
        f.write(head.encode())
        f.write(a.tobytes())
    return path


def chattr(path: Path, flag: str) -> bool:
    """Make a folder immutable (+i) or not (-i): even root cannot then create files in it."""
    r = subprocess.run(["chattr", flag, str(path)], capture_output=True)
    return r.returncode == 0


# =========================================================================================
# names: model ids and pack names never climb out of the cache
# =========================================================================================
def _pack(folder: Path, name: str) -> Path:
    b = bundle(folder / "src", with_scripts=False)
    return zip_folder(b, folder / name)


@scenario("pack-named-dotdot", "names", "refuse", "is not allowed",
          "a pack file named '...zip' (its model id would be '..', the parent of the cache)")
def _(d, home):
    home_marker(home)
    pack = _pack(d, "...zip")
    return Run(["models", "import", pack], inputs=[pack])


@scenario("pack-named-dot-zip", "names", "refuse", "is not allowed",
          "a pack file named '.zip' (an empty model id: the cache folder itself)")
def _(d, home):
    home_marker(home)
    pack = _pack(d, ".zip")
    return Run(["models", "import", pack], inputs=[pack])


@scenario("pack-named-dotdot-tgz", "names", "refuse", "is not allowed", "a tar pack named '...tar.gz'")
def _(d, home):
    home_marker(home)
    b = bundle(d / "src", with_scripts=False)
    pack = d / "...tar.gz"
    with tarfile.open(pack, "w:gz") as t:
        t.add(b, arcname="b")
    return Run(["models", "import", pack], inputs=[pack])


@scenario("add-id-dotdot", "names", "refuse", "is not allowed", "`medai models add B --id .. --yes`")
def _(d, home):
    home_marker(home)
    b = bundle(d / "B")
    return Run(["models", "add", b, "--id", "..", "--yes"], inputs=[b])


@scenario("add-id-absolute", "names", "refuse", "is not allowed",
          "`medai models add B --id /abs/dir --yes` where /abs/dir holds the user's files")
def _(d, home):
    home_marker(home)
    b = bundle(d / "B")
    victim = d / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("months of work\n")
    return Run(["models", "add", b, "--id", str(victim), "--yes"], inputs=[b, victim])


@scenario("add-id-subfolder", "names", "refuse", "is not allowed", "`--id a/b` (a path, not a name)")
def _(d, home):
    home_marker(home)
    b = bundle(d / "B")
    return Run(["models", "add", b, "--id", "keep_model/sub", "--yes"], inputs=[b])


@scenario("add-id-dot", "names", "refuse", "is not allowed", "`--id .` (the cache folder itself)")
def _(d, home):
    home_marker(home)
    b = bundle(d / "B")
    return Run(["models", "add", b, "--id", ".", "--yes"], inputs=[b])


@scenario("add-id-empty", "names", "refuse", "is not allowed", "`--id ''` (an empty id)")
def _(d, home):
    home_marker(home)
    b = bundle(d / "B")
    return Run(["models", "add", b, "--id", "", "--yes"], inputs=[b])


@scenario("add-folder-named-dotdot", "names", "refuse", "is not allowed",
          "`medai models add B/configs/..` (the folder's name, '..', becomes the id)")
def _(d, home):
    home_marker(home)
    b = bundle(d / "B")
    return Run(["models", "add", f"{b}/configs/..", "--yes"], inputs=[b])


@scenario("remove-symlinked-model", "names", "ok", "removed",
          "`medai models remove ID` where the cached model folder is a link to the user's own folder")
def _(d, home):
    home_marker(home)
    victim = d / "victim"
    (victim / "configs").mkdir(parents=True)
    (victim / "configs" / "inference.json").write_text('{"mine": true}')
    (home / "models").mkdir(exist_ok=True)
    os.symlink(victim, home / "models" / "spleen_ct_segmentation")
    return Run(["models", "remove", "spleen_ct_segmentation"], inputs=[victim],
               may_change=[home / "models" / "spleen_ct_segmentation"])


# =========================================================================================
# trust: nothing runs that the user did not trust, a damaged record means "untrusted"
# =========================================================================================
def _trusted_bundle_run(d: Path, home: Path, tamper: Optional[Callable] = None, store: Optional[Callable] = None,
                        marker: Optional[Path] = None) -> Run:
    """A bundle whose scripts import a root module (helpers.py), trusted with `medai models trust`
    (by the code under test), then ``tamper(bundle)`` / ``store(trusted.json)``; then segmented."""
    b = bundle(d / "B")
    (b / "helpers.py").write_text("SCALE = 1\n")
    net = b / "scripts" / "net.py"
    net.write_text("import helpers  # noqa: F401  (a module in the bundle root)\n" + net.read_text())
    img = good_image(d / "img.nii.gz", (20, 24, 22))
    out = d / "out" / "result.seg.nrrd"

    def after():
        if tamper:
            tamper(b)
        if store:
            store(home / "trusted.json")

    return Run(["segment", img, "-o", out, "--model", b, "--progress", "none"], setup=[["models", "trust", b]],
               after_setup=after, inputs=[img], absent=[out] + ([marker] if marker else []))


def _evil(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('untrusted code ran')\n"


@scenario("trust-store-list", "trust", "refuse", "is damaged", "trusted.json holds `[]`")
def _(d, home):
    return _trusted_bundle_run(d, home, store=lambda p: p.write_text("[]"))


@scenario("trust-store-random-bytes", "trust", "refuse", "is damaged", "trusted.json holds random bytes")
def _(d, home):
    return _trusted_bundle_run(d, home, store=lambda p: p.write_bytes(np.random.default_rng(1).bytes(400)))


@scenario("trust-store-folder", "trust", "refuse", "is damaged", "trusted.json is a folder")
def _(d, home):
    def folder(p):
        p.unlink()
        p.mkdir()
    return _trusted_bundle_run(d, home, store=folder)


@scenario("trust-store-bundles-list", "trust", "refuse", "is damaged", 'trusted.json holds {"bundles": []}')
def _(d, home):
    return _trusted_bundle_run(d, home, store=lambda p: p.write_text('{"bundles": []}'))


@scenario("trust-store-record-string", "trust", "refuse", "damaged", "the bundle's record is a string, not an object")
def _(d, home):
    def record(p):
        doc = json.loads(p.read_text())
        doc["bundles"] = {k: "yes" for k in doc["bundles"]}
        p.write_text(json.dumps(doc))
    return _trusted_bundle_run(d, home, store=record)


@scenario("trust-store-empty-file", "trust", "refuse", "is damaged", "trusted.json is 0 bytes")
def _(d, home):
    return _trusted_bundle_run(d, home, store=lambda p: p.write_bytes(b""))


@scenario("trust-edited-root-py", "trust", "refuse", "changed since it was trusted",
          "after trusting, a .py in the bundle root (imported by its scripts) is edited to run new code")
def _(d, home):
    marker = d / "UNTRUSTED_CODE_RAN"
    return _trusted_bundle_run(d, home, tamper=lambda b: (b / "helpers.py").write_text("SCALE = 1\n" + _evil(marker)),
                               marker=marker)


@scenario("trust-new-root-py", "trust", "refuse", "changed since it was trusted",
          "after trusting, a new .py appears in the bundle root (importable: the root is on sys.path)")
def _(d, home):
    return _trusted_bundle_run(d, home, tamper=lambda b: (b / "monai_patch.py").write_text("X = 1\n"))


@scenario("trust-planted-pyc", "trust", "refuse", "compiled Python",
          "after trusting, a .pyc planted in scripts/__pycache__ (its header matches net.py, so Python runs it)")
def _(d, home):
    marker = d / "UNTRUSTED_CODE_RAN"

    def plant(b):
        src = b / "scripts" / "net.py"
        evil_src = d / "evil_net.py"
        evil_src.write_text(_evil(marker) + src.read_text())
        st = src.stat()
        import importlib._bootstrap_external as be  # how Python itself writes a timestamp .pyc

        code = compile(evil_src.read_text(), str(src), "exec")
        data = be._code_to_timestamp_pyc(code, int(st.st_mtime), st.st_size)
        cache = Path(be.cache_from_source(str(src)))
        cache.parent.mkdir(exist_ok=True)
        cache.write_bytes(data)
    return _trusted_bundle_run(d, home, tamper=plant, marker=marker)


@scenario("trust-sourceless-pyc", "trust", "refuse", "compiled Python",
          "after trusting, a sourceless evil.pyc in the bundle root (importable as `evil`)")
def _(d, home):
    def plant(b):
        src = d / "evil.py"
        src.write_text("X = 1\n")
        py_compile.compile(str(src), cfile=str(b / "evil.pyc"))
    return _trusted_bundle_run(d, home, tamper=plant)


@scenario("trust-link-out-of-bundle", "trust", "refuse", "link",
          "after trusting, scripts/ext is a link to a folder outside the bundle (its code is not hashed)")
def _(d, home):
    ext = d / "outside"
    ext.mkdir()
    (ext / "mod.py").write_text("X = 1\n")
    return _trusted_bundle_run(d, home, tamper=lambda b: os.symlink(ext, b / "scripts" / "ext"))


@scenario("trust-new-shared-library", "trust", "refuse", "changed since it was trusted",
          "after trusting, a compiled extension (.so) appears in the bundle root")
def _(d, home):
    return _trusted_bundle_run(d, home, tamper=lambda b: (b / "fast.cpython-311-x86_64-linux-gnu.so").write_bytes(
        b"\x7fELF" + bytes(60)))


@scenario("trust-refuses-pyc-at-trust-time", "trust", "refuse", "compiled Python",
          "`medai models trust B` where B ships scripts/__pycache__/*.pyc")
def _(d, home):
    b = bundle(d / "B")
    (b / "scripts" / "__pycache__").mkdir()
    py_compile.compile(str(b / "scripts" / "net.py"), cfile=str(b / "scripts" / "__pycache__" / "net.cpython-311.pyc"))
    return Run(["models", "trust", b], inputs=[b])


@scenario("trust-edited-config", "trust", "refuse", "changed since it was trusted",
          "after trusting, configs/inference.json is edited (control: this was caught before too)")
def _(d, home):
    def edit(b):
        cfg = b / "configs" / "inference.json"
        cfg.write_text(cfg.read_text().replace('"overlap": 0.25', '"overlap": 0.5'))
    return _trusted_bundle_run(d, home, tamper=edit)


# =========================================================================================
# limits: sizes from headers, before anything is allocated or unpacked
# =========================================================================================
@scenario("nifti-bomb-2gib", "limits", "refuse", "MEDAI_MAX_IMAGE_VOXELS",
          "a ~2 MB .nii.gz announcing 2 GiB of voxels, `medai info` in 1 GiB of address space")
def _(d, home):
    p = nifti_bomb(d / "bomb.nii.gz", (2048, 1024, 1024))
    return Run(["info", p], inputs=[p], memory_limit_mb=1024)


@scenario("nrrd-bomb-1gib", "limits", "refuse", "MEDAI_MAX_IMAGE_VOXELS",
          "a gzip .nrrd announcing 1024 x 1024 x 640 int16 (1.25 GiB), `medai info` in 1 GiB")
def _(d, home):
    p = nrrd_bomb(d / "bomb.nrrd", (1024, 1024, 640))
    return Run(["info", p], inputs=[p], memory_limit_mb=1024)


@scenario("seg-nrrd-bomb", "limits", "refuse", "MEDAI_MAX_IMAGE_VOXELS",
          "a .seg.nrrd announcing 2048 x 1024 x 512 label voxels, `medai info` in 1 GiB")
def _(d, home):
    p = nrrd_bomb(d / "bomb.seg.nrrd", (2048, 1024, 512), kind="uchar", seg=True)
    return Run(["info", p], inputs=[p], memory_limit_mb=1024)


@scenario("image-over-voxel-limit-env", "limits", "refuse", "MEDAI_MAX_IMAGE_VOXELS",
          "a normal image over a lowered limit (MEDAI_MAX_IMAGE_VOXELS=10000)")
def _(d, home):
    p = good_image(d / "img.nii.gz")
    return Run(["info", p], env={"MEDAI_MAX_IMAGE_VOXELS": "10000"}, inputs=[p])


@scenario("image-over-byte-limit-env", "limits", "refuse", "MEDAI_MAX_IMAGE_BYTES",
          "a normal image over a lowered byte limit (MEDAI_MAX_IMAGE_BYTES=4096)")
def _(d, home):
    p = good_image(d / "img.nrrd")
    return Run(["info", p], env={"MEDAI_MAX_IMAGE_BYTES": "4096"}, inputs=[p])


@scenario("image-limit-not-a-number", "limits", "refuse", "is not a number",
          "MEDAI_MAX_IMAGE_VOXELS=lots (a limit that is not a number)")
def _(d, home):
    p = good_image(d / "img.nii.gz")
    return Run(["info", p], env={"MEDAI_MAX_IMAGE_VOXELS": "lots"}, inputs=[p])


def _bomb_pack(d: Path, zeros_mb: int, random_mb: int = 0, name: str = "bomb.zip") -> Path:
    b = bundle(d / "src", with_scripts=False)
    pack = d / name
    with zipfile.ZipFile(pack, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(b.rglob("*")):
            if f.is_file():
                z.write(f, f"b/{f.relative_to(b).as_posix()}")
        if random_mb:
            z.writestr("b/models/extra_weights.bin", np.random.default_rng(0).bytes(random_mb << 20))
        with z.open("b/models/padding.bin", "w", force_zip64=True) as f:
            block = bytes(16 << 20)
            for _ in range(zeros_mb // 16):
                f.write(block)
    return pack


@scenario("zip-bomb-7mb-207mb", "limits", "refuse", "MEDAI_MAX_PACK_RATIO",
          "a 7 MB zip pack that unpacks to 207 MB (7 MB of weights + 200 MB of zeros)")
def _(d, home):
    home_marker(home)
    pack = _bomb_pack(d, zeros_mb=200, random_mb=7)
    return Run(["models", "import", pack], inputs=[pack], absent=[home / "models" / "bomb"])


@scenario("tar-bomb", "limits", "refuse", "MEDAI_MAX_PACK_RATIO", "a .tar.gz pack holding 128 MB of zeros")
def _(d, home):
    home_marker(home)
    b = bundle(d / "src", with_scripts=False)
    pack = d / "tarbomb.tar.gz"
    with tarfile.open(pack, "w:gz", compresslevel=1) as t:
        t.add(b, arcname="b")
        info = tarfile.TarInfo("b/models/padding.bin")
        info.size = 128 << 20

        class Zeros(io.RawIOBase):
            def __init__(self, n):
                self.n = n

            def readable(self):
                return True

            def readinto(self, buf):
                k = min(len(buf), self.n)
                buf[:k] = bytes(k)
                self.n -= k
                return k
        t.addfile(info, io.BufferedReader(Zeros(info.size)))
    return Run(["models", "import", pack], inputs=[pack], absent=[home / "models" / "tarbomb"])


@scenario("pack-over-byte-limit-env", "limits", "refuse", "MEDAI_MAX_PACK_BYTES",
          "a normal pack over a lowered limit (MEDAI_MAX_PACK_BYTES=5000)")
def _(d, home):
    home_marker(home)
    pack = _pack(d, "small_model.zip")
    return Run(["models", "import", pack], env={"MEDAI_MAX_PACK_BYTES": "5000"}, inputs=[pack],
               absent=[home / "models" / "small_model"])


@scenario("pack-too-many-files", "limits", "refuse", "MEDAI_MAX_PACK_FILES",
          "a pack of 300 files with MEDAI_MAX_PACK_FILES=100")
def _(d, home):
    home_marker(home)
    b = bundle(d / "src", with_scripts=False)
    for k in range(300):
        (b / "docs").mkdir(exist_ok=True)
        (b / "docs" / f"page{k}.md").write_text("x")
    pack = zip_folder(b, d / "many_files.zip")
    return Run(["models", "import", pack], env={"MEDAI_MAX_PACK_FILES": "100"}, inputs=[pack],
               absent=[home / "models" / "many_files"])


# =========================================================================================
# credentials: never printed, logged, sent as events or written to a report
# =========================================================================================
def _secret_run(args, env=None, scan=(), inputs=()) -> Run:
    return Run([*args], env=dict(env or {}), secrets=(SECRET, f"{USER}:"), scan=list(scan), inputs=list(inputs))


@scenario("mirror-password-no-port", "credentials", "refuse", "cannot reach",
          "MEDAI_MIRROR=https://alice:S3cretPW@mirror.example (no port) for `medai models download`")
def _(d, home):
    return _secret_run(["models", "download", "spleen_ct_segmentation"],
                       env={"MEDAI_MIRROR": f"https://{USER}:{SECRET}@mirror.invalid"})


@scenario("mirror-flag-password-no-port", "credentials", "refuse", "cannot reach",
          "`--mirror https://alice:S3cretPW@mirror.example` (no port)")
def _(d, home):
    return _secret_run(["models", "download", "spleen_ct_segmentation", "--mirror",
                        f"https://{USER}:{SECRET}@mirror.invalid"])


@scenario("mirror-password-with-port", "credentials", "refuse", "cannot reach",
          "MEDAI_MIRROR with a password and a port (nothing listening)")
def _(d, home):
    return _secret_run(["models", "download", "spleen_ct_segmentation"],
                       env={"MEDAI_MIRROR": f"http://{USER}:{SECRET}@127.0.0.1:9"})


@scenario("mirror-password-percent-encoded", "credentials", "refuse", "cannot reach",
          "a password with an encoded '@' (S3cretPW%40x) in MEDAI_MIRROR")
def _(d, home):
    r = _secret_run(["models", "download", "spleen_ct_segmentation"],
                    env={"MEDAI_MIRROR": f"https://{USER}:{SECRET}%40x@mirror.invalid"})
    return r


@scenario("mirror-password-bad-scheme", "credentials", "refuse", "refusing to download over",
          "MEDAI_MIRROR=ftp://alice:S3cretPW@host (a refused scheme)")
def _(d, home):
    return _secret_run(["models", "download", "spleen_ct_segmentation"],
                       env={"MEDAI_MIRROR": f"ftp://{USER}:{SECRET}@mirror.invalid"})


@scenario("mirror-password-segment-json", "credentials", "refuse", "cannot reach",
          "`medai segment --model spleen_ct_segmentation --progress json --report r.json` with the mirror password")
def _(d, home):
    img = good_image(d / "img.nii.gz")
    report = d / "report.json"
    return _secret_run(["segment", img, "-o", d / "out", "--model", "spleen_ct_segmentation", "--progress", "json",
                        "--report", report],
                       env={"MEDAI_MIRROR": f"https://{USER}:{SECRET}@mirror.invalid"}, scan=[report], inputs=[img])


@scenario("proxy-password", "credentials", "refuse", "cannot reach",
          "HTTPS_PROXY=http://alice:S3cretPW@127.0.0.1:9 (a proxy with a password, nothing listening)")
def _(d, home):
    return _secret_run(["models", "download", "spleen_ct_segmentation"],
                       env={"HTTPS_PROXY": f"http://{USER}:{SECRET}@127.0.0.1:9",
                            "https_proxy": f"http://{USER}:{SECRET}@127.0.0.1:9"})


# =========================================================================================
# errors: MedAI's own files damaged, faults, permissions, misnamed files, memory
# =========================================================================================
@scenario("catalogue-is-folder", "errors", "refuse", "catalogue.json is a folder",
          "MEDAI_HOME/catalogue.json is a folder")
def _(d, home):
    (home / "catalogue.json").mkdir()
    return Run(["models", "list"])


@scenario("catalogue-random-bytes", "errors", "refuse", "catalogue.json is not a text file",
          "MEDAI_HOME/catalogue.json holds random bytes")
def _(d, home):
    (home / "catalogue.json").write_bytes(np.random.default_rng(2).bytes(500))
    return Run(["models", "list"], inputs=[home / "catalogue.json"])


@scenario("catalogue-empty-file", "errors", "refuse", "catalogue.json is empty",
          "MEDAI_HOME/catalogue.json is 0 bytes")
def _(d, home):
    (home / "catalogue.json").write_bytes(b"")
    return Run(["models", "list"], inputs=[home / "catalogue.json"])


@scenario("catalogue-list", "errors", "refuse", "is invalid at (top)",
          "MEDAI_HOME/catalogue.json holds `[]` (control: named before too)")
def _(d, home):
    (home / "catalogue.json").write_text("[]")
    return Run(["models", "list"], inputs=[home / "catalogue.json"])


@scenario("catalogue-unreadable", "errors", "refuse", "permission denied",
          "MEDAI_HOME/catalogue.json cannot be read (mode 000)")
def _(d, home):
    p = home / "catalogue.json"
    p.write_text('{"version": 1, "models": []}')
    p.chmod(0)
    return Run(["models", "list"], unprivileged=True, cleanup=lambda: p.chmod(0o644))


@scenario("catalogue-in-segment", "errors", "refuse", "catalogue.json is a folder",
          "`medai segment` while MEDAI_HOME/catalogue.json is a folder (names the file, not 'internal error')")
def _(d, home):
    (home / "catalogue.json").mkdir()
    img = good_image(d / "img.nii.gz")
    return Run(["segment", img, "-o", d / "out.seg.nrrd", "--progress", "none"], inputs=[img],
               absent=[d / "out.seg.nrrd"])


@scenario("pack-file-and-folder-zip", "errors", "refuse", "both as a file and as a folder",
          "a zip pack holding b/configs as a file and b/configs/inference.json")
def _(d, home):
    home_marker(home)
    pack = d / "clash.zip"
    with zipfile.ZipFile(pack, "w") as z:
        z.writestr("b/configs", "I am a file")
        z.writestr("b/configs/inference.json", "{}")
    return Run(["models", "import", pack], inputs=[pack], absent=[home / "models" / "clash"])


@scenario("pack-file-and-folder-tar", "errors", "refuse", "both as a file and as a folder",
          "a tar pack holding b/models as a file and b/models/model.pt")
def _(d, home):
    home_marker(home)
    pack = d / "clash.tar.gz"
    with tarfile.open(pack, "w:gz") as t:
        for name, data in (("b/configs/inference.json", b"{}"), ("b/models", b"file"), ("b/models/model.pt", b"w")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return Run(["models", "import", pack], inputs=[pack], absent=[home / "models" / "clash"])


@scenario("pack-duplicate-entry", "errors", "refuse", "appears twice",
          "a zip pack holding configs/inference.json twice (the second copy would silently win)")
def _(d, home):
    home_marker(home)
    b = bundle(d / "src", with_scripts=False)
    pack = zip_folder(b, d / "dup.zip", top="b")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(pack, "a") as z:
            z.writestr("b/configs/inference.json", '{"network_def": "$__import__(\'os\').getcwd()"}')
    return Run(["models", "import", pack], inputs=[pack], absent=[home / "models" / "dup"])


@scenario("pack-disk-full", "errors", "refuse", "disk is full",
          "the disk fills up while a pack is unpacked (ENOSPC from the write)")
def _(d, home):
    home_marker(home)
    pack = _pack(d, "full_disk.zip")
    return Run(["models", "import", pack], fault="enospc-extract", inputs=[pack],
               absent=[home / "models" / "full_disk"])


@scenario("pack-unreadable", "errors", "refuse", "permission denied", "a pack file the user cannot read (mode 000)")
def _(d, home):
    home_marker(home)
    pack = _pack(d, "locked.zip")
    pack.chmod(0)
    return Run(["models", "import", pack], unprivileged=True, cleanup=lambda: pack.chmod(0o644))


@scenario("pack-is-folder", "errors", "refuse", "is a folder", "`medai models import FOLDER` (a folder, not a pack)")
def _(d, home):
    home_marker(home)
    b = bundle(d / "src", with_scripts=False)
    return Run(["models", "import", b], inputs=[b])


@scenario("models-folder-unwritable", "errors", "refuse", "permission denied",
          "MEDAI_HOME/models cannot be written (immutable folder)")
def _(d, home):
    pack = _pack(d, "nowhere.zip")
    (home / "models").mkdir()
    ok = chattr(home / "models", "+i")
    return Run(["models", "import", pack], inputs=[pack], cleanup=(lambda: chattr(home / "models", "-i")) if ok else None)


@scenario("input-unreadable", "errors", "refuse", "permission denied", "an image the user cannot read (mode 000)")
def _(d, home):
    p = good_image(d / "img.nii.gz")
    p.chmod(0)
    return Run(["info", p], unprivileged=True, cleanup=lambda: p.chmod(0o644))


@scenario("dicom-folder-unreadable", "errors", "refuse", "permission denied",
          "a DICOM folder the user cannot list (mode 000)")
def _(d, home):
    folder = _corpus().dicom_series(d / "dicom", n=4)
    folder.chmod(0)
    return Run(["info", folder], unprivileged=True, cleanup=lambda: folder.chmod(0o755))


@scenario("output-subfolder-unwritable", "errors", "refuse", "permission",
          "`medai segment img -o out/sub/x.seg.nrrd` where out/ cannot be written (immutable)")
def _(d, home):
    img = good_image(d / "img.nii.gz", (36, 50, 35))
    out = d / "out"
    out.mkdir()
    ok = chattr(out, "+i")
    return Run(["segment", img, "-o", out / "sub" / "x.seg.nrrd", "--progress", "none"], inputs=[img],
               absent=[out / "sub"], cleanup=(lambda: chattr(out, "-i")) if ok else None)


def _misnamed(d: Path, make_as: str, name: str) -> Path:
    src = d / f"real{make_as}"
    _corpus().write_sitk(_corpus().mr_like(), src, compress=make_as == ".nii.gz")
    dst = d / name
    src.rename(dst)
    return dst


@scenario("misnamed-nrrd-as-nii-gz", "errors", "refuse", "wrong format for its extension",
          "an NRRD file named .nii.gz")
def _(d, home):
    p = _misnamed(d, ".nrrd", "scan.nii.gz")
    return Run(["info", p], inputs=[p])


@scenario("misnamed-nifti-as-nrrd", "errors", "refuse", "wrong format for its extension",
          "a .nii.gz file named .nrrd")
def _(d, home):
    p = _misnamed(d, ".nii.gz", "scan.nrrd")
    return Run(["info", p], inputs=[p])


@scenario("misnamed-mha-as-nii-gz", "errors", "refuse", "wrong format for its extension",
          "a MetaImage file named .nii.gz")
def _(d, home):
    p = _misnamed(d, ".mha", "scan.nii.gz")
    return Run(["info", p], inputs=[p])


@scenario("misnamed-nifti-as-mha", "errors", "refuse", "wrong format for its extension", "a .nii file named .mha")
def _(d, home):
    p = _misnamed(d, ".nii", "scan.mha")
    return Run(["info", p], inputs=[p])


@scenario("misnamed-pdf-as-nii-gz", "errors", "refuse", "wrong format for its extension",
          "a PDF report named scan.nii.gz")
def _(d, home):
    p = d / "scan.nii.gz"
    p.write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n%%EOF\n" + bytes(400))
    return Run(["info", p], inputs=[p])


@scenario("misnamed-zip-as-nrrd", "errors", "refuse", "wrong format for its extension",
          "a zipped export named scan.nrrd")
def _(d, home):
    p = d / "scan.nrrd"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("slice0.dcm", bytes(400))
    return Run(["info", p], inputs=[p])


@scenario("allocation-failure", "errors", "refuse", "too large to load",
          "an image under the limits that does not fit in the memory left (1 GiB address space, 1 GiB of voxels)")
def _(d, home):
    p = nifti_bomb(d / "big.nii.gz", (1024, 1024, 500), dtype=np.int16)
    return Run(["info", p], inputs=[p], memory_limit_mb=1024)


# =========================================================================================
# sanity: images a model would answer nonsense on, refused (or warned with the flag)
# =========================================================================================
def _check(p: Path, accept: bool = False) -> Run:
    args = ["info", p, "--check", "--modality", "MR"]
    return Run(args + ([ACCEPT] if accept else []), inputs=[p], legacy_args=args)


def _labelmap(d: Path, name="mask.nii.gz", dtype=np.uint8, values=(0, 1, 2)) -> Path:
    a = _corpus().mr_like()
    lab = np.zeros(a.shape, dtype)
    for k, v in enumerate(values[1:], start=1):
        lab[a > 100 + 120 * (k - 1)] = v
    return _corpus().write_sitk(lab, d / name, compress=name.endswith(".gz"))


def _outlier(d: Path, value=1e30, name="outlier.nii.gz") -> Path:
    a = _corpus().mr_like()
    a[5, 6, 7] = value
    return _corpus().write_sitk(a, d / name, compress=name.endswith(".gz"))


def _thin(d: Path, n=2) -> Path:
    return _corpus().write_sitk(_corpus().mr_like((n, 64, 64)), d / f"thin{n}.nii.gz", compress=True)


def _aniso(d: Path, spacing=(0.1, 0.1, 20.0), name="aniso.nii.gz") -> Path:
    return _corpus().write_sitk(_corpus().mr_like(), d / name, spacing=spacing, compress=name.endswith(".gz"))


def _sheared(d: Path) -> Path:
    return write_nrrd_direction(d / "sheared.nrrd", _corpus().mr_like(),
                                [(1, 0, 0), (0, 1, 0), (0, 0.5, 1)])  # K leans 26.6 degrees towards J


@scenario("labelmap-as-image", "sanity", "refuse", "looks like a label map", "a uint8 label map (0, 1, 2) given as image")
def _(d, home):
    return _check(_labelmap(d))


@scenario("binary-mask-as-image", "sanity", "refuse", "looks like a label map", "a binary mask (0/1) given as image")
def _(d, home):
    return _check(_labelmap(d, "mask01.nrrd", values=(0, 1)))


@scenario("float-labelmap-as-image", "sanity", "refuse", "looks like a label map",
          "a label map stored as float32 (0.0, 1.0, 2.0, 3.0)")
def _(d, home):
    return _check(_labelmap(d, "labels.mha", dtype=np.float32, values=(0, 1, 2, 3)))


@scenario("seg-nrrd-as-image", "sanity", "refuse", "is a segmentation (.seg.nrrd), not an image",
          "a Slicer .seg.nrrd given as the image")
def _(d, home):
    sys.path.insert(0, str(REPO / "MedAI"))
    return _check(_seg_nrrd(d))


def _seg_nrrd(d: Path) -> Path:
    import slicerio

    a = _corpus().mr_like()
    lab = (a > 150).astype(np.uint8) + (a > 300).astype(np.uint8)
    seg = {"voxels": lab.transpose(2, 1, 0), "ijkToLPS": np.eye(4), "containedRepresentationNames": ["Binary labelmap"],
           "masterRepresentation": "Binary labelmap",
           "segments": [{"id": "Segment_1", "labelValue": 1, "layer": 0, "name": "outer", "color": [1, 0, 0]},
                        {"id": "Segment_2", "labelValue": 2, "layer": 0, "name": "inner", "color": [0, 1, 0]}]}
    p = d / "labels.seg.nrrd"
    slicerio.write_segmentation(str(p), seg)
    return p


def _dicom_seg(d: Path) -> Path:
    """A DICOM SEG object (highdicom) referencing a synthetic MR series, alone in its folder."""
    import highdicom as hd
    import pydicom

    series = _corpus().dicom_series(d / "series", n=6)
    sources = [pydicom.dcmread(str(f)) for f in sorted(series.iterdir())]
    for ds in sources:  # the study-level attributes a SEG copies from its source images (fictional)
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "O", "20200101", "120000"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
    mask = np.zeros((len(sources), sources[0].Rows, sources[0].Columns), dtype=bool)
    mask[2:4, 8:20, 8:18] = True
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion",
        segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
        segmented_property_type=hd.sr.CodedConcept("108369006", "SCT", "Neoplasm"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(source_images=sources, pixel_array=mask,
                              segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[desc],
                              series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
                              instance_number=1, manufacturer="MedAI tests", manufacturer_model_name="corpus",
                              software_versions="1", device_serial_number="0")
    out = d / "seg_only"
    out.mkdir()
    seg.save_as(str(out / "seg.dcm"))
    return out


@scenario("dicom-seg-as-image", "sanity", "refuse", "DICOM Segmentation object",
          "a folder holding only a DICOM SEG object given as the image")
def _(d, home):
    return _check(_dicom_seg(d))


@scenario("outlier-1e30", "sanity", "refuse", "absurd values", "an MR image with one voxel of 1e30")
def _(d, home):
    return _check(_outlier(d))


@scenario("outlier-minus-1e30", "sanity", "refuse", "absurd values", "one voxel of -1e30")
def _(d, home):
    return _check(_outlier(d, -1e30, "neg.nrrd"))


@scenario("outlier-1e12-float64", "sanity", "refuse", "absurd values", "a float64 image with one voxel of 1e12")
def _(d, home):
    a = _corpus().mr_like().astype(np.float64)
    a[1, 2, 3] = 1e12
    return _check(_corpus().write_sitk(a, d / "f64.mha"))


@scenario("two-slices", "sanity", "refuse", "too thin", "a volume of 2 slices")
def _(d, home):
    return _check(_thin(d, 2))


@scenario("three-slices", "sanity", "refuse", "too thin", "a volume of 3 slices")
def _(d, home):
    return _check(_thin(d, 3))


@scenario("anisotropic-0.1-0.1-20", "sanity", "refuse", "extremely anisotropic", "0.1 x 0.1 x 20 mm voxels")
def _(d, home):
    return _check(_aniso(d))


@scenario("anisotropic-0.5-0.5-20", "sanity", "refuse", "extremely anisotropic", "0.5 x 0.5 x 20 mm voxels (ratio 40)")
def _(d, home):
    return _check(_aniso(d, (0.5, 0.5, 20.0), "aniso40.nrrd"))


@scenario("sheared-nrrd", "sanity", "refuse", "sheared geometry", "an NRRD whose axes are not at right angles")
def _(d, home):
    return _check(_sheared(d))


@scenario("sheared-mha", "sanity", "refuse", "sheared geometry", "a MetaImage with a sheared TransformMatrix")
def _(d, home):
    a = _corpus().mr_like().astype(np.float32)
    k, j, i = a.shape
    p = d / "sheared.mha"
    head = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
            f"TransformMatrix = 1 0 0 0 1 0 0.3 0 0.95\nOffset = 0 0 0\nElementSpacing = 1 1 1\n"
            f"DimSize = {i} {j} {k}\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n")
    p.write_bytes(head.encode() + a.tobytes())
    return _check(p)


@scenario("labelmap-accepted-with-flag", "sanity", "warn", "looks like a label map",
          f"a label map with {ACCEPT}: proceeds with a warning")
def _(d, home):
    return _check(_labelmap(d), accept=True)


@scenario("outlier-accepted-with-flag", "sanity", "warn", "absurd values", f"one 1e30 voxel with {ACCEPT}")
def _(d, home):
    return _check(_outlier(d), accept=True)


@scenario("thin-accepted-with-flag", "sanity", "warn", "too thin", f"2 slices with {ACCEPT}")
def _(d, home):
    return _check(_thin(d, 2), accept=True)


@scenario("anisotropic-accepted-with-flag", "sanity", "warn", "extremely anisotropic",
          f"0.1 x 0.1 x 20 mm with {ACCEPT}")
def _(d, home):
    return _check(_aniso(d), accept=True)


@scenario("sheared-accepted-with-flag", "sanity", "warn", "sheared geometry", f"a sheared NRRD with {ACCEPT}")
def _(d, home):
    return _check(_sheared(d), accept=True)


def _segment(d: Path, p: Path) -> Run:
    out = d / "out" / "result.seg.nrrd"
    return Run(["segment", p, "-o", out, "--progress", "none"], inputs=[p], absent=[out])


@scenario("segment-labelmap", "sanity", "refuse", "looks like a label map", "`medai segment` on a label map")
def _(d, home):
    return _segment(d, _labelmap(d))


@scenario("segment-seg-nrrd", "sanity", "refuse", "is a segmentation (.seg.nrrd), not an image",
          "`medai segment` on a .seg.nrrd")
def _(d, home):
    return _segment(d, _seg_nrrd(d))


@scenario("segment-dicom-seg", "sanity", "refuse", "DICOM Segmentation object", "`medai segment` on a DICOM SEG folder")
def _(d, home):
    return _segment(d, _dicom_seg(d))


@scenario("segment-outlier-1e30", "sanity", "refuse", "absurd values",
          "`medai segment` on an image with one 1e30 voxel (it used to double the reported volume)")
def _(d, home):
    return _segment(d, _outlier(d))


@scenario("segment-two-slices", "sanity", "refuse", "too thin", "`medai segment` on 2 slices")
def _(d, home):
    return _segment(d, _thin(d, 2))


@scenario("segment-sheared", "sanity", "refuse", "sheared geometry", "`medai segment` on a sheared NRRD")
def _(d, home):
    return _segment(d, _sheared(d))


# =========================================================================================
# running one scenario
# =========================================================================================
# Fault injection inside the medai process: only the named library call misbehaves; the rest is the
# code under test. enospc-extract: the third file written while unpacking a pack gets ENOSPC after
# half of its bytes (a disk that fills up), as a real write() reports it (no file name).
WRAPPER = r'''
import errno, os, shutil, sys
if os.environ.get("MEDAI_TEST_FAULT") == "enospc-extract":
    _orig, _n = shutil.copyfileobj, [0]
    def copyfileobj(src, dst, length=0):
        name = str(getattr(dst, "name", ""))
        if os.path.join("models", "") in name:
            _n[0] += 1
            if _n[0] >= 3:
                dst.write(src.read(64))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return _orig(src, dst, length) if length else _orig(src, dst)
    shutil.copyfileobj = copyfileobj
from MedAILib.cli import main
sys.exit(main(sys.argv[1:]))
'''


@dataclasses.dataclass
class Outcome:
    status: str   # clean | warned | wrong-message | crash | accepted | data-loss | leak | untrusted-code | skipped
    detail: str
    returncode: int = 0
    stderr: str = ""
    stdout: str = ""


GOOD = ("clean", "warned")


def snapshot(paths) -> dict:
    """{path: sha256 or 'dir' or 'link->target'} of every file under ``paths``."""
    out = {}
    for root in paths:
        root = Path(root)
        items = [root] + (sorted(root.rglob("*")) if root.is_dir() and not root.is_symlink() else [])
        for p in items:
            try:
                if p.is_symlink():
                    out[str(p)] = "link->" + os.readlink(p)
                elif p.is_dir():
                    out[str(p)] = "dir"
                elif p.is_file():
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError as e:  # unreadable on purpose (mode 000): its metadata must stay
                st = p.lstat()
                out[str(p)] = f"unreadable {st.st_size} {st.st_mtime_ns} ({e.errno})"
    return out


def _home_snapshot(home: Path) -> dict:
    snap = snapshot([home]) if home.exists() else {}
    return {k: v for k, v in snap.items() if not Path(k).is_relative_to(home / "cache")}


def _unprivileged_prefix() -> Optional[list]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if not setpriv:
        return None
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def _one_error_line(stderr: str, message: str) -> str:
    lines = [l for l in stderr.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("medai: error:") or (l.startswith("medai: case ") and " failed: " in l)]
    if not errors:
        return "no 'medai: error:' line"
    if not any(message in l for l in errors):
        return f"message {message!r} not in: {errors[-1][:300]!r}"
    if len(errors) != 1:
        return f"{len(errors)} error lines"
    return ""


def needs_subprocess(r: Run) -> bool:
    """Faults, dropped permissions and memory limits only exist in a process of their own."""
    return bool(r.fault or r.unprivileged or r.memory_limit_mb)


def run(sc: Scenario, root: Path, code: Path, legacy: bool = False, python: str = sys.executable,
        timeout: int = 300, inprocess: bool = False) -> Outcome:
    """Build ``sc`` under ``root/<name>`` and run it against the engine at ``code`` (a ``MedAI`` folder).

    ``inprocess``: call ``MedAILib.cli.main`` of the engine already imported here (what the test suite
    does to save ~2 s of interpreter start per scenario; ``code`` must then be that engine), except
    for scenarios that need a process of their own (:func:`needs_subprocess`)."""
    folder = root / sc.name
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    home = folder / "home"
    home.mkdir()
    env = dict(os.environ)
    for k in ("MEDAI_MIRROR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
              "MEDAI_ACCEPT_INPUT_WARNINGS", "MEDAI_RESOURCES", "MEDAI_TEST_FAULT") + tuple(
              k for k in os.environ if k.startswith("MEDAI_MAX_")):
        env.pop(k, None)
    env.update(MEDAI_HOME=str(home), PYTHONPATH=str(code), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    if not (Path(code) / "MedAILib" / "resources").is_dir():  # the old layout: catalogue in <repo>/Resources
        env["MEDAI_RESOURCES"] = str(Path(code).parent / "Resources")
    r = sc.build(folder, home)
    inprocess = inprocess and not needs_subprocess(r)
    try:
        env.update({k: str(v) for k, v in r.env.items()})
        for args in r.setup:
            s = (_main_inprocess(args, env, folder) if inprocess else
                 subprocess.run([python, "-m", "MedAILib.cli", *map(str, args)], env=env, capture_output=True,
                                text=True, timeout=timeout))
            if s.returncode != 0:
                return Outcome("skipped", f"setup {args[:2]} failed: {s.stderr.strip()[-200:]}", s.returncode)
        if r.after_setup:
            r.after_setup()
        args = r.legacy_args if (legacy and r.legacy_args is not None) else r.args
        before_inputs = snapshot(r.inputs)
        before_home = _home_snapshot(home)
        if inprocess:
            return judge(sc, r, _main_inprocess(args, env, folder), before_inputs, before_home, home)
        cmd = [python, "-c", WRAPPER] if r.fault else [python, "-m", "MedAILib.cli"]
        cmd += [str(a) for a in args]
        if r.fault:
            env["MEDAI_TEST_FAULT"] = r.fault
        if r.unprivileged:
            prefix = _unprivileged_prefix()
            if prefix is None:
                return Outcome("skipped", "cannot drop root's permission override (no setpriv)")
            cmd = prefix + cmd
        preexec = None
        if r.memory_limit_mb:
            import resource

            lim = r.memory_limit_mb << 20

            def preexec():
                resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec,
                               cwd=folder)
        except subprocess.TimeoutExpired:
            return Outcome("crash", f"timed out after {timeout} s")
        return judge(sc, r, p, before_inputs, before_home, home)
    finally:
        if r.cleanup:
            r.cleanup()


def _main_inprocess(args, env: dict, cwd: Path):
    """``medai ARGS`` through ``MedAILib.cli.main`` in this process, with ``env`` as the environment."""
    import contextlib

    from MedAILib.cli import main as medai_main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = medai_main([str(a) for a in args])
            except SystemExit as e:  # argparse errors
                rc = e.code if isinstance(e.code, int) else 2
            except BaseException as e:  # noqa: BLE001 - what a user would see as a traceback
                import traceback

                err.write("Traceback (most recent call last):\n" + "".join(traceback.format_exception(e)))
                rc = 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def judge(sc: Scenario, r: Run, p, before_inputs: dict, before_home: dict, home: Path) -> Outcome:
    text = p.stdout + p.stderr

    def out(status, detail):
        return Outcome(status, detail, p.returncode, p.stderr[-2000:], p.stdout[-2000:])

    for s in r.secrets:
        found = [str(f) for f in r.scan if Path(f).is_file() and s in Path(f).read_text(errors="replace")]
        if s in text or found:
            return out("leak", f"{s!r} shown in {'the output' if s in text else found}")
    for m in r.absent:
        if "UNTRUSTED_CODE_RAN" in str(m) and Path(m).exists():
            return out("untrusted-code", "code added after trusting ran")
    if snapshot(r.inputs) != before_inputs:
        return out("data-loss", "an input changed")
    after_home = _home_snapshot(home)
    lost = [k for k, v in before_home.items() if after_home.get(k) != v
            and not any(Path(k) == Path(m) or Path(k).is_relative_to(m) for m in r.may_change)]
    if lost:
        return out("data-loss", f"MEDAI_HOME lost or changed {len(lost)} item(s), e.g. {lost[0]}")
    left = [str(m) for m in r.absent if Path(m).exists() or Path(m).is_symlink()]
    if left and sc.expect == "refuse" and p.returncode == 0:
        return out("accepted", f"exit 0 and it wrote {left[0]}")
    if left:
        return out("data-loss" if sc.expect == "refuse" else "wrong-message",
                   f"partial or stale output left behind: {left[0]}")
    if "Traceback" in text or "internal error" in p.stderr:
        line = next((l for l in reversed(p.stderr.splitlines()) if l.strip()), "")
        return out("crash", line[:300])
    if sc.expect == "refuse":
        if p.returncode == 0:
            return out("accepted", "exit 0")
        problem = _one_error_line(p.stderr, sc.message)
        return out("wrong-message", problem) if problem else out("clean", "refused with the message")
    if p.returncode != 0:
        return out("wrong-message", f"exit {p.returncode}: {p.stderr.strip()[-300:]}")
    if sc.message not in text:
        return out("accepted", f"exit 0 without {sc.message!r}")
    return out("warned" if sc.expect == "warn" else "clean", "proceeded as expected")


def counts(results: dict) -> dict:
    """{family: {status: n}} of ``{scenario name: Outcome}``."""
    by = {f: {} for f in FAMILIES}
    for sc in SCENARIOS:
        if sc.name in results:
            st = results[sc.name].status
            by[sc.family][st] = by[sc.family].get(st, 0) + 1
    return by


def main(argv=None) -> int:
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description="run the issue-14 CLI scenarios against a checkout")
    ap.add_argument("--code", default=str(REPO / "MedAI"), help="the MedAI folder of the checkout to test")
    ap.add_argument("--legacy", action="store_true", help="the code predates the new flags (drop them)")
    ap.add_argument("--only", nargs="*", help="scenario names")
    ap.add_argument("--json", help="write the outcomes here")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="medai-scenarios-"))
    results = {}
    for sc in SCENARIOS:
        if args.only and sc.name not in args.only:
            continue
        t0 = time.monotonic()
        o = run(sc, root, Path(args.code), legacy=args.legacy)
        results[sc.name] = o
        print(f"{sc.family:<12} {sc.name:<36} {o.status:<14} {time.monotonic() - t0:5.1f}s {o.detail[:150]}", flush=True)
    print(json.dumps(counts(results), indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({k: dataclasses.asdict(v) for k, v in results.items()}, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
