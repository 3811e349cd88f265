"""Verified downloads into the cache: progress bar (speed, time left), SHA-256, HTTP Range resume,
atomic move into place, offline use from the cache, a mirror base URL, and safe pack import.

A partial download lives as ``NAME.part`` and is only renamed to ``NAME`` after its checksum
matched, so a file under its final name is always complete and verified.
"""

from __future__ import annotations

import base64
import errno
import gzip
import http.client
import ipaddress
import json
import os
import shutil
import socket
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Optional

from MedAILib.core import limits
from MedAILib.core.causes import describe_os_error
from MedAILib.core.errors import DownloadError, ModelError, OutputError
from MedAILib.core.names import name_problem
from MedAILib.core.redact import redact, remember_url
from MedAILib.core.redact import redact_url as _redact_url
from MedAILib.models import trust as trust_mod
from MedAILib.models.cache import bundle_dir, downloads_dir, models_dir, remove_tree_in_cache, sha256_file
from MedAILib.models.checksums import digest_file

CHUNK = 1 << 16
RETRIES = 3
MARKER = ".medai-source.json"
LOOPBACK_HOSTS = ("localhost",)
PACK_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")


def redact_url(url: str) -> str:
    """``url`` without a user name or password (``https://user:pass@host/`` -> ``https://***@host/``):
    URLs reach messages and logs, credentials must not (:mod:`MedAILib.core.redact`)."""
    return _redact_url(url)


def mirror_base(mirror: Optional[str] = None) -> Optional[str]:
    """The mirror base URL: ``--mirror`` wins over ``MEDAI_MIRROR``; None when neither is set.
    Its credentials, if any, are remembered as secrets so that no message can show them."""
    m = mirror or os.environ.get("MEDAI_MIRROR")
    if m:
        remember_url(m)
    return m.rstrip("/") if m else None


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, explicit_mirror: bool = False) -> None:
    """HTTPS only; plain http or file:// only for loopback hosts or a mirror the user set explicitly."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and (_is_loopback(parts.hostname or "") or explicit_mirror):
        return
    if parts.scheme == "file" and explicit_mirror:
        return
    raise DownloadError(f"refusing to download over {parts.scheme or 'an unknown scheme'}: {redact_url(url)}",
                        "only HTTPS is used; for a local mirror set it explicitly with --mirror URL "
                        "or MEDAI_MIRROR")


def source_url(url: str, mirror: Optional[str] = None) -> tuple:
    """(url to fetch, came_from_mirror): with a mirror, the same file name under the mirror base."""
    base = mirror_base(mirror)
    if not base:
        return url, False
    name = PurePosixPath(urllib.parse.urlsplit(url).path).name
    return f"{base}/{name}", True


def split_credentials(url: str) -> tuple:
    """(url without user:password, Authorization header value or None).

    urllib cannot take credentials inside a URL (``https://alice:pw@host`` fails with "nonnumeric
    port: 'pw@host'", quoting the password): they are sent as HTTP Basic authentication instead."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()).decode()
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), f"Basic {token}"


def _open(url: str, start: int, timeout: float):
    plain, auth = split_credentials(url)
    req = urllib.request.Request(plain, headers={"User-Agent": "medai"})
    if auth:
        req.add_header("Authorization", auth)
    if start:
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - scheme checked in check_url


def entry_checksum(entry) -> tuple:
    """(algorithm, hex value) of a catalogue entry's archive: sha256, or the publisher's ``checksum``."""
    if entry.raw.get("sha256"):
        return "sha256", entry.raw["sha256"]
    c = entry.raw.get("checksum") or {}
    if not c.get("value"):
        raise DownloadError(f"model {entry.id} has no checksum in the catalogue",
                            "it cannot be downloaded until its catalogue entry is verified")
    return c["algorithm"], c["value"].lower()


def download_file(url: str, dest, sha256: str, size: Optional[int] = None, mirror: Optional[str] = None,
                  progress=None, timeout: float = 30.0, show_bar: bool = True, algorithm: str = "sha256") -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``), verify the checksum (SHA-256 unless the
    publisher uses another ``algorithm``), then rename into place."""
    dest = Path(dest)
    url, from_mirror = source_url(url, mirror)
    try:
        urllib.parse.urlsplit(url).port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise DownloadError(f"{redact_url(url)} is not a valid URL (bad port or host)",
                            "check --mirror / MEDAI_MIRROR; credentials go in the URL as https://USER:PASSWORD@host/ "
                            "(special characters percent-encoded)") from None
    check_url(url, explicit_mirror=from_mirror)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(*describe_os_error(e, dest.parent, "create")) from e
    part = dest.with_name(dest.name + ".part")
    try:
        if urllib.parse.urlsplit(url).scheme == "file":
            src = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
            if not src.exists():
                raise DownloadError(f"{src} not found in the local mirror", "check --mirror / MEDAI_MIRROR")
            shutil.copyfile(src, part)
        else:
            _fetch_with_resume(url, part, size, progress, timeout, show_bar)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS):
            raise OutputError(*describe_os_error(e, part, "write")) from e
        raise
    got = digest_file(part, algorithm)
    if got != sha256.lower():
        part.unlink()
        raise DownloadError(
            f"checksum mismatch for {dest.name} from {redact_url(url)} (expected {algorithm} {sha256[:12]}..., got {got[:12]}...)",
            "the file was corrupted or truncated in transit or on the server; it was deleted — run the "
            "command again, or use another mirror")
    os.replace(part, dest)
    return dest


def _fetch_with_resume(url, part: Path, size, progress, timeout, show_bar) -> None:
    attempts = 0
    bar = None
    try:
        while True:
            start = part.stat().st_size if part.exists() else 0
            if size is not None and start >= size:
                return  # already have every byte: the checksum decides
            try:
                resp = _open(url, start, timeout)
            except urllib.error.HTTPError as e:
                if e.code == 416 and start:  # range past the end: we already hold the whole file
                    return
                raise DownloadError(f"download of {redact_url(url)} failed: HTTP {e.code} {e.reason}",
                                    "check the address or mirror, or try again later") from e
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                attempts += 1
                if attempts > RETRIES:
                    raise DownloadError(f"cannot reach {redact_url(url)} ({redact(str(getattr(e, 'reason', e)))})",
                                        "check the network or proxy; offline, copy the model pack to this "
                                        "machine and run `medai models import PACK.zip`") from e
                time.sleep(min(2.0, 0.2 * attempts))
                continue
            with resp:
                if start and resp.status != 206:
                    start = 0  # server ignored Range: start over
                mode = "ab" if start else "wb"
                length = resp.headers.get("Content-Length")
                total = size or ((int(length) + start) if length is not None else None)
                if bar is None and show_bar:
                    from tqdm import tqdm  # only when a download shows a bar (start-up time)

                    bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                               desc=part.name[:-5], leave=False)
                elif bar is not None:
                    bar.n = start
                    bar.refresh()
                done = start
                t0, b0 = time.monotonic(), start
                try:
                    with open(part, mode) as f:
                        while True:
                            block = resp.read(CHUNK)
                            if not block:
                                break
                            f.write(block)
                            done += len(block)
                            if bar is not None:
                                bar.update(len(block))
                            if progress is not None:
                                if total:
                                    rate = (done - b0) / max(1e-6, time.monotonic() - t0)
                                    progress.update(done / total, f"downloading {part.name[:-5]}: "
                                                    f"{done / 1e6:.1f}/{total / 1e6:.1f} MB at {rate / 1e6:.1f} MB/s")
                                else:
                                    progress.cancel.check()
                except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as e:
                    attempts += 1
                    if attempts > RETRIES:
                        raise DownloadError(f"download of {redact_url(url)} kept being interrupted ({e})",
                                            "run the command again: it resumes where it stopped") from e
                    if progress is not None:
                        progress.log(f"connection interrupted at {done} bytes; resuming")
                    continue
            if length is not None and done < int(length) + start:
                attempts += 1  # server closed early without an error: resume
                if attempts > RETRIES:
                    return
                continue
            return
    finally:
        if bar is not None:
            bar.close()


# --- the cache of catalogue models -----------------------------------------------------------

def archive_path(entry) -> Path:
    url = entry.source["url"]
    suffix = ".zip" if entry.source.get("format", "zip") == "zip" or url.endswith(".zip") else ".bin"
    return downloads_dir() / f"{entry.id}{suffix}"


def _marker_ok(folder: Path, entry) -> bool:
    m = folder / MARKER
    if not m.exists():
        return False
    try:
        rec = json.loads(m.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    if rec.get("checksum") != list(entry_checksum(entry)):
        return False
    weights = folder / "models" / "model.pt"
    # A damaged cached weights file is caught here and rebuilt from the (verified) archive.
    return not rec.get("weights_sha256") or (weights.exists() and sha256_file(weights) == rec["weights_sha256"])


def is_cached(entry) -> bool:
    return _marker_ok(bundle_dir(entry.id), entry)


def ensure_model(entry, allow_download: bool = True, mirror: Optional[str] = None, progress=None) -> Path:
    """The cached bundle folder of a catalogue entry; verified archive re-extracted or downloaded if needed."""
    folder = bundle_dir(entry.id)
    if _marker_ok(folder, entry) and trust_mod.trust_status(folder)[0]:
        return folder
    # Not verified, or its trust record no longer matches (edited files, a record from an older
    # MedAI): rebuilt below from the verified archive, never run as it is.
    archive = archive_path(entry)
    algorithm, expected = entry_checksum(entry)
    if archive.exists() and digest_file(archive, algorithm) != expected:
        if progress is not None:
            progress.log(f"cached {archive.name} is corrupted (checksum mismatch); fetching it again")
        archive.unlink()
    if not archive.exists():
        if not entry.verified:
            raise DownloadError(f"model {entry.id} has no verified download location and checksum",
                                "it cannot be downloaded until its catalogue entry is verified")
        if not allow_download:
            raise DownloadError(f"model {entry.id} is not in the cache and downloads are off",
                                f"run `medai models download {entry.id}` on a connected machine, or "
                                "`medai models import PACK.zip` with a copied pack")
        download_file(entry.source["url"], archive, expected, entry.raw.get("size_bytes"), mirror=mirror,
                      progress=progress, algorithm=algorithm)
    install_archive(archive, entry.id, checksum=(algorithm, expected),
                    trust_reason=f"catalogue model {entry.id}: archive {algorithm} verified")
    return folder


# --- packs: safe extraction --------------------------------------------------------------------

_REFUSE_HINT = "get the pack from its official source"


def _refuse(name: str, why: str) -> ModelError:
    return ModelError(f"model pack entry {name!r} {why}; refusing the pack", _REFUSE_HINT)


def _check_member_path(name: str, target: Path) -> None:
    """No absolute path, drive letter or ``..``; and, belt and braces, the resolved path stays in ``target``."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise _refuse(name, "would be written outside the cache")
    root, out = target.resolve(), (target / name).resolve()
    if root != out and root not in out.parents:
        raise _refuse(name, "escapes the cache")


def _check_member(info: zipfile.ZipInfo, target: Path) -> None:
    _check_member_path(info.filename, target)
    if (info.external_attr >> 16) & 0o170000 == stat.S_IFLNK:
        raise _refuse(info.filename, "is a symbolic link")


def _check_tar_member(m: tarfile.TarInfo, target: Path) -> None:
    _check_member_path(m.name, target)
    if m.issym() or m.islnk():
        raise _refuse(m.name, "is a link")
    if not (m.isfile() or m.isdir()):
        raise _refuse(m.name, "is a device, pipe or other special file")


def _check_member_names(names, pack_name: str) -> None:
    """Refuse a pack in which one name is both a file and a folder (``a`` and ``a/b``), or that holds
    the same name twice (a later copy would silently replace what was checked): extraction would fail
    half-way or install something other than what was checked."""
    files, dirs, seen = set(), set(), set()
    for raw, is_dir in names:
        name = PurePosixPath(raw.replace("\\", "/")).as_posix().rstrip("/")
        if not name or name == ".":
            continue
        if not is_dir:
            if name in seen:
                raise _refuse(raw, "appears twice in the pack")
            seen.add(name)
            files.add(name)
        else:
            dirs.add(name)
        parts = name.split("/")
        for k in range(1, len(parts)):
            dirs.add("/".join(parts[:k]))
    clash = sorted(files & dirs)
    if clash:
        raise ModelError(f"model pack {pack_name} has {clash[0]!r} both as a file and as a folder; refusing the pack",
                         _REFUSE_HINT)


def _check_room(pack_name: str, total: int, target: Path) -> None:
    """Refuse before unpacking when the disk cannot hold it (rather than fill it and fail half-way)."""
    try:
        free = shutil.disk_usage(target.parent).free
    except OSError:
        return
    if total > free:
        raise OutputError(f"the disk is full: model pack {pack_name} needs {total / 1e6:.0f} MB in {target.parent}, "
                          f"only {free / 1e6:.0f} MB are free; nothing was unpacked",
                          "free some space (or set MEDAI_HOME to a folder on a bigger disk) and import it again")


def _extract_error(e: OSError, pack_name: str, target: Path) -> Exception:
    """An OSError while unpacking, named: disk full, permission, or a file/folder clash."""
    where = e.filename or target
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"the disk is full: unpacking model pack {pack_name} into {target.parent} failed at "
                           f"{Path(where).name}; nothing was installed",
                           "free some space (or set MEDAI_HOME to a folder on a bigger disk) and import it again")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        message, hint = describe_os_error(e, where, "write")
        return OutputError(f"{message} (unpacking model pack {pack_name}); nothing was installed", hint)
    if e.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return ModelError(f"model pack {pack_name} is inconsistent: {Path(where).name} is both a file and a folder; "
                          "refusing the pack", _REFUSE_HINT)
    message, hint = describe_os_error(e, where, "write")
    return OutputError(f"{message} (unpacking model pack {pack_name}); nothing was installed", hint)


def safe_extract(pack_path, target: Path) -> None:
    """Extract a zip or tar pack into ``target`` after checking every entry (no absolute paths, ``..``,
    links or special files, no name both a file and a folder, no name twice) and its size (the member
    table summed against :mod:`MedAILib.core.limits` and the free disk space): a pack can never write
    outside the cache nor fill the disk."""
    pack_path = Path(pack_path)
    try:
        packed = pack_path.stat().st_size
        if not zipfile.is_zipfile(pack_path) and _is_tar(pack_path):
            _safe_extract_tar(pack_path, target, packed)
            return
        with zipfile.ZipFile(pack_path) as z:
            infos = z.infolist()
            for info in infos:
                _check_member(info, target)
            _check_member_names([(i.filename, i.is_dir()) for i in infos], pack_path.name)
            total = limits.check_pack_size(pack_path.name, [i.file_size for i in infos], packed)
            _check_room(pack_path.name, total, target)
            target.mkdir(parents=True, exist_ok=True)
            for info in infos:
                # ZipExtFile stops at the member's declared size and checks its CRC, so a member
                # cannot unpack to more than the table said.
                z.extract(info, target)
    except zipfile.BadZipFile as e:
        raise ModelError(f"{pack_path.name} is not a valid zip or tar file ({e})", "copy the pack again") from e
    except OSError as e:
        raise _extract_error(e, pack_path.name, target) from e


def _is_tar(path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _safe_extract_tar(tar_path, target: Path, packed: int) -> None:
    """Tar packs: every member checked by hand (Python 3.11 may lack extraction filters), then
    extracted with the ``data`` filter where this Python has it (3.12, 3.11.4+) as a second guard."""
    try:
        with tarfile.open(tar_path) as t:
            members = t.getmembers()
            for m in members:
                _check_tar_member(m, target)
            _check_member_names([(m.name, m.isdir()) for m in members], Path(tar_path).name)
            total = limits.check_pack_size(Path(tar_path).name, [m.size for m in members if m.isfile()], packed)
            _check_room(Path(tar_path).name, total, target)
            target.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):
                t.extractall(target, members=members, filter="data")
            else:  # pragma: no cover - old 3.11 patch releases
                t.extractall(target, members=members)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ModelError(f"{Path(tar_path).name} is not a valid tar file ({e})", "copy the pack again") from e


def _bundle_root(folder: Path) -> Path:
    if (folder / "configs").is_dir():
        return folder
    subs = [d for d in folder.iterdir() if d.is_dir() and (d / "configs").is_dir()]
    if len(subs) == 1:
        return subs[0]
    raise ModelError("the model pack does not contain a MONAI bundle (no configs/ folder)",
                     "a pack is a zip or tar of one bundle folder: configs/, models/")


def install_archive(archive, model_id: str, checksum: Optional[tuple] = None, trust_reason: Optional[str] = None) -> Path:
    """Extract a bundle zip into the cache as ``models/<model_id>`` atomically (temp folder + rename).

    The id is checked first (one plain name: never ``..`` or an absolute path), and the folder it
    replaces is deleted only after checking, links resolved, that it lies inside the cache."""
    final = bundle_dir(model_id)  # raises for an id that is not one plain name, before any disk access
    try:
        models_dir().mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(*describe_os_error(e, models_dir(), "create")) from e
    tmp = models_dir() / f".{model_id}.partial-{uuid.uuid4().hex[:8]}"
    pack_name = Path(archive).name
    try:
        safe_extract(archive, tmp)
        root = _bundle_root(tmp)
        weights = root / "models" / "model.pt"
        (root / MARKER).write_text(json.dumps({
            "id": model_id, "checksum": list(checksum or ("sha256", sha256_file(archive))),
            "weights_sha256": sha256_file(weights) if weights.exists() else None}))
        if final.exists() or final.is_symlink():
            remove_tree_in_cache(final)
        os.replace(root, final)
    except OSError as e:
        raise _extract_error(e, pack_name, tmp) from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if trust_reason:
        trust_mod.trust(final, reason=trust_reason)
    return final


def pack_model_id(pack: Path) -> str:
    """The model id a pack that is not a catalogue model gets: its file name without the pack suffix,
    lower case, characters other than letters, digits, '_', '.', '-' replaced by '_'. Refused (not
    "fixed") when that is not one plain name: ``...zip`` would give ``..``, the parent folder."""
    suffix = next((x for x in PACK_SUFFIXES if pack.name.lower().endswith(x)), None)
    stem = pack.name[: -len(suffix)] if suffix else pack.stem
    model_id = "".join(c if c.isalnum() or c in "_.-" else "_" for c in stem).lower()
    problem = name_problem(model_id)
    if problem:
        raise ModelError(f"model pack {pack.name}: its file name gives the model id {model_id!r}, which is not "
                         f"allowed ({problem}); nothing was installed",
                         "rename the pack to NAME.zip where NAME is a plain model name, e.g. my_model.zip")
    return model_id


def import_pack(pack, catalogue) -> tuple:
    """``medai models import PACK.zip`` (or ``.tar.gz``/``.tgz``/``.tar``): install a pack copied to an
    offline machine.

    A pack whose SHA-256 matches a catalogue entry is installed (and trusted) as that model; any
    other pack is installed under its bundle name but stays untrusted until ``--trust``.
    Returns (model id, folder, trusted).
    """
    pack = Path(pack)
    if not pack.exists():
        raise ModelError(f"{pack} does not exist", "check the path of the pack")
    if pack.is_dir():
        raise ModelError(f"{pack} is a folder, not a model pack",
                         "give the .zip/.tar.gz file, or add a bundle folder with `medai models add FOLDER`")
    try:
        with open(pack, "rb"):
            pass
    except OSError as e:
        raise ModelError(*describe_os_error(e, pack, "read")) from e
    digests = {}
    for entry in catalogue:
        if entry.is_shipped:
            continue
        try:
            algorithm, expected = entry_checksum(entry)
        except DownloadError:
            continue
        if algorithm not in digests:
            digests[algorithm] = digest_file(pack, algorithm)
        if digests[algorithm] == expected:
            try:
                downloads_dir().mkdir(parents=True, exist_ok=True)
                shutil.copyfile(pack, archive_path(entry))
            except OSError as e:
                raise OutputError(*describe_os_error(e, archive_path(entry), "write")) from e
            folder = install_archive(archive_path(entry), entry.id, checksum=(algorithm, expected),
                                     trust_reason=f"catalogue model {entry.id}: pack {algorithm} verified")
            return entry.id, folder, True
    model_id = pack_model_id(pack)  # before anything is unpacked
    digest = sha256_file(pack)
    folder = install_archive(pack, model_id, checksum=("sha256", digest))
    return model_id, folder, False
