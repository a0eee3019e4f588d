"""MNIST and Fashion-MNIST on first use: download, verify, place atomically.

:func:`ensure_idx_files` makes sure a folder holds the four IDX files of a known data set
(``train-images-idx3-ubyte.gz`` and the others). A file already there is used as it is, with no
request made; a missing one is downloaded from ``<mirror>/<file>`` (the data set's canonical
mirror unless the config value ``data.mirror`` names another) into a temporary file beside
its final place, with a progress bar. It is moved into place, readable as the umask allows any
other file to be, only once the sha256 of its uncompressed content matches the published one,
so a partial or corrupt download is never used: it is deleted and fetched again, up to
``ATTEMPTS`` times. Checking the uncompressed
content rather than the ``.gz`` bytes lets any mirror pass that serves the same IDX data,
however it compressed them.

Offline, or when a mirror cannot serve a file, the error is one line naming the URL and the
folder where the files can be put by hand.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zlib

ATTEMPTS = 3  # downloads of one file before giving up on a mirror whose file is corrupt
CHUNK_BYTES = 1 << 16
TIMEOUT_S = 60.0  # seconds a stalled connection waits for data
CACHE_ENV = "XDG_CACHE_HOME"
STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DownloadError(RuntimeError):
    """A data set file could not be downloaded; the message says which, from where, to where."""


@dataclasses.dataclass(frozen=True)
class IdxDataset:
    """A data set distributed as four gzip-compressed IDX files.

    Attributes:
      mirror: base URL of the canonical mirror; a file's URL is ``<mirror>/<stem>.gz``.
      sha256: sha256 of each file's uncompressed content, by stem (the published values).
    """

    mirror: str
    sha256: dict[str, str]


KNOWN = {
    "mnist": IdxDataset(
        mirror="https://storage.googleapis.com/cvdf-datasets/mnist",
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        }),
    "fashion_mnist": IdxDataset(
        mirror="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        }),
}


def cache_dir() -> str:
    """The per-user data folder: ``$XDG_CACHE_HOME/vscjax``, else ``~/.cache/vscjax``."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vscjax")


def missing_files(folder: str) -> list[str]:
    """The stems of the four IDX files that ``folder`` holds neither gzipped nor plain."""
    return [stem for stem in STEMS
            if not any(os.path.isfile(os.path.join(folder, stem + ext)) for ext in (".gz", ""))]


def ensure_idx_files(name: str, folder: str, mirror: str = "") -> None:
    """Download the IDX files of data set ``name`` that ``folder`` lacks.

    Files already in ``folder`` are left alone and nothing is requested. A data set not in
    ``KNOWN`` is left to the IDX reader, which names the missing files.

    Args:
      name: the data set ("mnist", "fashion_mnist").
      folder: where the files live; created if needed.
      mirror: base URL to download from; "" for the data set's canonical mirror.

    Raises:
      DownloadError: a file could not be fetched, or never matched its checksum.
    """
    missing = missing_files(folder)
    if name not in KNOWN or not missing:
        return
    dataset = KNOWN[name]
    base = (mirror or dataset.mirror).rstrip("/")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create the data folder {folder} for {name} ({err.strerror}); "
                            f"set $VSCJAX_DATA_DIR or data.dir to a writable folder") from err
    for stem in missing:
        _fetch_verified(f"{base}/{stem}.gz", os.path.join(folder, stem + ".gz"),
                        dataset.sha256[stem], hint=_by_hand(name, folder))


def _by_hand(name: str, folder: str) -> str:
    files = ", ".join(stem + ".gz" for stem in STEMS)
    return (f"put the {name} files ({files}) into {folder} by hand, or set data.mirror "
            f"to a mirror that has them")


def _fetch_verified(url: str, path: str, sha256: str, *, hint: str) -> None:
    """Download ``url`` to ``path`` once its uncompressed content has hash ``sha256``."""
    problem = ""
    for _ in range(ATTEMPTS):
        try:
            handle, partial = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part",
                                               dir=os.path.dirname(path))
        except OSError as err:
            raise _write_error(path, err) from err
        try:
            with os.fdopen(handle, "wb") as out:
                problem = _download(url, out, path, hint=hint)
            if not problem:
                problem = _content_problem(partial, sha256)
            if not problem:
                # mkstemp made it private to us (0600); a data folder may be shared
                os.chmod(partial, 0o666 & ~_umask())
                os.replace(partial, path)  # atomic: the file appears whole or not at all
                return
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    raise DownloadError(f"{url} failed its check in {ATTEMPTS} downloads (last: {problem}); {hint}")


def _umask() -> int:
    """The process's umask: the permissions a file created here would lack."""
    mask = os.umask(0o077)  # reading it means setting it: for this instant, the strictest
    os.umask(mask)
    return mask


def _write_error(path: str, err: OSError) -> DownloadError:
    """A :class:`DownloadError` for a data file that cannot be written (no space, read-only)."""
    return DownloadError(f"cannot write {path} ({err.strerror or err}); free space there, or set "
                         "$VSCJAX_DATA_DIR or data.dir to a folder with room that you may write")


def _download(url: str, out, path: str, *, hint: str) -> str:
    """Stream ``url`` into the open file ``out`` (the temporary file of ``path``) with a
    progress bar; "" if complete, else why not. A server that cannot be reached or refuses the
    file raises :class:`DownloadError` (its message ends with ``hint``), and so does a file
    that cannot be written."""
    from tqdm import tqdm

    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        raise DownloadError(f"cannot download {url}: HTTP {err.code} {err.reason}; {hint}") from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot download {url} ({reason}); {hint}") from err
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length else None
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                  desc=f"downloading {os.path.basename(url)}", leave=False) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as err:  # a dropped connection
                    return f"the transfer broke off after {received} bytes ({type(err).__name__})"
                if not chunk:
                    break
                try:
                    out.write(chunk)
                    out.flush()  # a disk that is full fails here, not at the close
                except OSError as err:  # this side: the disk, not the connection
                    raise _write_error(path, err) from err
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        return f"received {received} of {total} bytes"
    return ""


def _content_problem(path: str, sha256: str) -> str:
    """"" if the gzip file at ``path`` decompresses to content with hash ``sha256``, else why not."""
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as err:
        return f"the file is not a complete gzip file ({err})"
    if digest.hexdigest() != sha256:
        return f"the content's sha256 is {digest.hexdigest()}, expected {sha256}"
    return ""
