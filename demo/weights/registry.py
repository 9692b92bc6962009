"""Known official checkpoints and the one place that downloads them (layer 3).

Each :class:`CheckpointEntry` names an official EG3D generator snapshot (Chan et al. 2022, released
on NVIDIA NGC) by an id that follows the official file name, e.g. ``eg3d-ffhq512-128`` for
``ffhq512-128.pkl``, and lists where a copy can be fetched, its licence and what is known about the
file (size, hash). Hashes are recorded only where a public source states them; none is guessed.

:func:`download` is the only function in the package that touches the network. It tries each
source in order (a Hugging Face mirror through ``huggingface_hub``, or a plain HTTPS URL streamed
with ``urllib``, resuming a partial ``<name>.part`` file with an HTTP ``Range`` request), checks
size and hash before an atomic rename, and, when every source fails, raises a
:class:`~demo.errors.CheckpointError` that says how to put the file in place by hand.

On disk (see ``checkpoints/README.md``)::

    <checkpoints_dir()>/original/<official file name>   downloaded official pickles
    <checkpoints_dir()>/<id>/                            converted folders (demo.weights.store)

``checkpoints_dir()`` is ``$DEMO_CHECKPOINTS_DIR`` when set, else ``checkpoints/`` beside ``demo/``.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import os
import re
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from demo.errors import CheckpointError
from demo.progress import ProgressFn, report

logger = logging.getLogger(__name__)

#: Environment variable that moves the checkpoints folder (tests, shared caches, Spaces storage).
CHECKPOINTS_DIR_ENV = "DEMO_CHECKPOINTS_DIR"
#: Environment variable huggingface_hub reads for a token (gated or private mirrors).
HF_TOKEN_ENV = "HF_TOKEN"
#: Seconds a socket may wait for a connection or for the next bytes before the source is given up.
SOCKET_TIMEOUT_S = 30.0
#: Bytes read per request chunk; also the granularity of progress reports.
CHUNK_BYTES = 1 << 20

_USER_AGENT = "3d-face-studio (python urllib)"
_NGC_FILES = "https://api.ngc.nvidia.com/v2/models/nvidia/research/eg3d/versions/1/files/"
_NGC_CATALOG = "https://catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/eg3d"
_EG3D_LICENCE = "NVIDIA Source Code License for EG3D (non-commercial use only)"
_EG3D_LICENCE_URL = "https://github.com/NVlabs/eg3d/blob/main/LICENSE.txt"
_FOCAL_FACES = 4.2647  # FFHQ and AFHQ training cameras (docs/eg3d.md)
_FOCAL_SHAPENET = 1.7074


@dataclass(frozen=True)
class CheckpointSource:
    """One place a checkpoint file can be fetched from."""

    kind: str
    """``'huggingface'`` (``location`` is a repo id) or ``'url'`` (``location`` is a full URL)."""
    location: str
    """Hugging Face repo id, e.g. ``'gwang-kim/datid3d-finetuned-eg3d-models'``, or an HTTP(S) URL."""
    filename: str | None = None
    """File inside the Hugging Face repo; unused for URLs."""

    def __post_init__(self) -> None:
        if self.kind not in ("huggingface", "url"):
            raise ValueError(f"CheckpointSource.kind: expected 'huggingface' or 'url', got {self.kind!r}")
        if self.kind == "huggingface" and not self.filename:
            raise ValueError("CheckpointSource.filename: required for a 'huggingface' source")

    def describe(self) -> str:
        """Human-readable location, used in progress and error messages."""
        if self.kind == "huggingface":
            return f"{hub_endpoint()}/{self.location}/blob/main/{self.filename}"
        return self.location


@dataclass(frozen=True)
class CheckpointEntry:
    """A known official checkpoint."""

    id: str
    """Our id, e.g. ``'eg3d-ffhq512-128'``: family, data, output and neural rendering resolution."""
    family: str
    """Architecture family: ``'eg3d'`` or ``'panohead'``."""
    file_name: str
    """Official file name, e.g. ``'ffhq512-128.pkl'``; the downloaded file keeps it."""
    description: str
    sources: tuple[CheckpointSource, ...]
    """Tried in order by :func:`download`."""
    licence: str
    licence_url: str
    size_bytes: int | None
    """Exact file size when a public source states it, else None."""
    sha256: str | None
    """Full lowercase hex sha256 when published, else None (never guessed)."""
    focal_length: float
    """Normalised focal length of the training cameras."""
    config_preset: str
    """Name of the :class:`demo.config.GeneratorConfig` classmethod with this architecture."""
    sha256_prefix: str | None = None
    """Leading hex digits of the sha256 when only those are published; checked if present."""
    notes: str = ""
    """Provenance of the size/hash facts and anything unusual about the sources."""

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError(f"CheckpointEntry.sources: {self.id} needs at least one source")
        for name in ("sha256", "sha256_prefix"):
            value = getattr(self, name)
            if value is not None and (value != value.lower() or any(ch not in "0123456789abcdef" for ch in value)):
                raise ValueError(f"CheckpointEntry.{name}: {self.id} must be lowercase hex, got {value!r}")
        if self.sha256 is not None and len(self.sha256) != 64:
            raise ValueError(f"CheckpointEntry.sha256: {self.id} must have 64 hex digits")

    @property
    def urls(self) -> list[str]:
        """Every source as a URL a person can open, in the order :func:`download` tries them."""
        return [source.describe() for source in self.sources]


def _ngc(file_name: str) -> CheckpointSource:
    return CheckpointSource("url", _NGC_FILES + file_name)


_ENTRIES: dict[str, CheckpointEntry] = {
    entry.id: entry
    for entry in (
        CheckpointEntry(
            id="eg3d-ffhq512-128",
            family="eg3d",
            file_name="ffhq512-128.pkl",
            description="EG3D trained on FFHQ faces: 512 px output, neural rendering at 128.",
            sources=(_ngc("ffhq512-128.pkl"),),
            licence=_EG3D_LICENCE,
            licence_url=_EG3D_LICENCE_URL,
            size_bytes=None,
            sha256=None,
            focal_length=_FOCAL_FACES,
            config_preset="ffhq512",
            notes="Size and sha256 not published; only the NGC copy is known.",
        ),
        CheckpointEntry(
            id="eg3d-ffhqrebalanced512-128",
            family="eg3d",
            file_name="ffhqrebalanced512-128.pkl",
            description="EG3D on FFHQ rebalanced for pose (more side views): 512 px, rendering at 128.",
            sources=(
                CheckpointSource(
                    "huggingface",
                    "gwang-kim/datid3d-finetuned-eg3d-models",
                    "finetuned_models/nvidia_ffhqrebalanced512-128.pkl",
                ),
                _ngc("ffhqrebalanced512-128.pkl"),
            ),
            licence=_EG3D_LICENCE,
            licence_url=_EG3D_LICENCE_URL,
            size_bytes=377_644_956,
            sha256=None,
            focal_length=_FOCAL_FACES,
            config_preset="ffhq512",
            sha256_prefix="7f418947",
            notes=(
                "Size and sha256 prefix 7f418947 (ending 44a7) from the Git LFS pointer of the DATID-3D "
                "Space copy; the full sha256 is not published. The Hugging Face mirror is a third-party "
                "copy; NVIDIA's non-commercial licence still governs the weights."
            ),
        ),
        CheckpointEntry(
            id="eg3d-afhqcats512-128",
            family="eg3d",
            file_name="afhqcats512-128.pkl",
            description="EG3D trained on AFHQv2 cats: 512 px output, neural rendering at 128.",
            sources=(_ngc("afhqcats512-128.pkl"),),
            licence=_EG3D_LICENCE,
            licence_url=_EG3D_LICENCE_URL,
            size_bytes=None,
            sha256=None,
            focal_length=_FOCAL_FACES,
            config_preset="afhq512",
            notes="Size and sha256 not published; only the NGC copy is known.",
        ),
        CheckpointEntry(
            id="eg3d-shapenetcars128-64",
            family="eg3d",
            file_name="shapenetcars128-64.pkl",
            description="EG3D trained on ShapeNet cars: 128 px output, rendering at 64, white background.",
            sources=(_ngc("shapenetcars128-64.pkl"),),
            licence=_EG3D_LICENCE,
            licence_url=_EG3D_LICENCE_URL,
            size_bytes=None,
            sha256=None,
            focal_length=_FOCAL_SHAPENET,
            config_preset="shapenet128",
            notes="Size and sha256 not published; only the NGC copy is known.",
        ),
        CheckpointEntry(
            id="panohead-easy-khair-180",
            family="panohead",
            file_name="easy-khair-180-gpc0.8-trans10-025000.pkl",
            description="PanoHead full heads seen from any angle (360 degrees): 512 px output, tri-grid, background.",
            sources=(
                CheckpointSource("huggingface", "camenduru/PanoHead", "easy-khair-180-gpc0.8-trans10-025000.pkl"),
                CheckpointSource("huggingface", "dylanebert/PanoHead", "easy-khair-180-gpc0.8-trans10-025000.pkl"),
            ),
            licence="CC BY-NC-SA 4.0 (PanoHead licence file; non-commercial)",
            licence_url="https://github.com/SizheAn/PanoHead/blob/main/LICENSE",
            size_bytes=None,
            sha256=None,
            focal_length=_FOCAL_FACES,
            config_preset="panohead512",
            notes=(
                "Third-party Hugging Face mirrors of the file the PanoHead README links on Google Drive; size and "
                "sha256 not published. Its neural rendering resolution (64 or 128) is read from the file."
            ),
        ),
    )
}


def list_entries() -> list[CheckpointEntry]:
    """All known checkpoints, in registry order."""
    return list(_ENTRIES.values())


def get_entry(checkpoint_id: str) -> CheckpointEntry:
    """The entry for ``checkpoint_id``; a :class:`CheckpointError` listing the known ids otherwise."""
    try:
        return _ENTRIES[checkpoint_id]
    except KeyError:
        known = ", ".join(_ENTRIES)
        raise CheckpointError(
            f"Unknown checkpoint id {checkpoint_id!r}. Known ids: {known}. Run `python -m demo models` to list them."
        ) from None


def find_entry_by_file_name(file_name: str) -> CheckpointEntry | None:
    """The entry whose official (or mirror) file name is ``file_name``, or None."""
    for entry in _ENTRIES.values():
        names = {entry.file_name} | {Path(s.filename).name for s in entry.sources if s.filename}
        if file_name in names:
            return entry
    return None


def checkpoints_dir() -> Path:
    """Root folder of checkpoints: ``$DEMO_CHECKPOINTS_DIR`` if set, else ``<repo>/checkpoints``."""
    override = os.environ.get(CHECKPOINTS_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2] / "checkpoints"


def original_path(checkpoint_id: str) -> Path:
    """Where the official pickle of ``checkpoint_id`` lives once downloaded."""
    return checkpoints_dir() / "original" / get_entry(checkpoint_id).file_name


def converted_dir(checkpoint_id: str) -> Path:
    """Default folder of the converted checkpoint (``config.json`` + ``*.safetensors``)."""
    return checkpoints_dir() / get_entry(checkpoint_id).id


# --- download -------------------------------------------------------------------------------------


class _SourceFailed(Exception):
    """One source could not deliver the file; the message says why (collected for the final error)."""

    def __init__(self, message: str, *, access_denied: bool = False) -> None:
        super().__init__(message)
        self.access_denied = access_denied


def hub_endpoint() -> str:
    """The Hugging Face endpoint downloads go to: ``$HF_ENDPOINT`` when set (a mirror), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def download(
    checkpoint_id: str,
    *,
    dest_dir: Path | None = None,
    progress: ProgressFn | None = None,
    token: str | None = None,
) -> Path:
    """Fetch the official pickle of ``checkpoint_id`` and return its path.

    Args:
        checkpoint_id: a registry id, e.g. ``'eg3d-ffhq512-128'``.
        dest_dir: folder for the file; default ``checkpoints_dir()/'original'``. The file keeps its
            official name.
        progress: called with a fraction in [0, 1] and a message (megabytes done / total).
        token: Hugging Face token for gated or private mirrors; default: ``$HF_TOKEN`` or the login
            stored by ``huggingface-cli login``.

    Returns:
        Path of the verified file. An existing file with the right size (and hash, where known) is
        returned without any network access.

    Raises:
        CheckpointError: unknown id, or no source delivered a file of the expected size and hash.
            The message lists what was tried and how to put the file in place by hand.
    """
    entry = get_entry(checkpoint_id)
    dest = (Path(dest_dir) if dest_dir is not None else checkpoints_dir() / "original") / entry.file_name

    existing_problem = None
    if dest.is_file():
        existing_problem = _verify(dest, entry, None)
        if existing_problem is None:
            logger.info("%s already present at %s", entry.id, dest)
            report(progress, 1.0, f"{entry.file_name} already downloaded")
            return dest
        logger.warning("Existing %s does not match the registry (%s); downloading it again.", dest, existing_problem)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tried: list[str] = []
    denied = False
    for source in entry.sources:
        try:
            if source.kind == "huggingface":
                candidate, server_size = _fetch_huggingface(source, dest, token=token, progress=progress), None
            else:
                candidate, server_size = _fetch_url(source.location, dest, entry, progress=progress)
        except _SourceFailed as exc:
            logger.info("Could not download %s from %s: %s", entry.file_name, source.describe(), exc)
            tried.append(f"{source.describe()}: {exc}")
            denied = denied or exc.access_denied
            continue
        problem = _verify(candidate, entry, server_size, progress=progress)
        if problem is not None:
            candidate.unlink(missing_ok=True)
            logger.warning("Discarded %s from %s: %s", entry.file_name, source.describe(), problem)
            tried.append(f"{source.describe()}: downloaded file rejected, {problem}")
            continue
        os.replace(candidate, dest)
        report(progress, 1.0, f"{entry.file_name} downloaded")
        return dest

    raise CheckpointError(_manual_instructions(entry, dest, tried, existing_problem, access_denied=denied))


def _manual_instructions(
    entry: CheckpointEntry, dest: Path, tried: list[str], existing_problem: str | None, *, access_denied: bool = False
) -> str:
    lines = [f"Could not download {entry.id} ({entry.file_name}). Tried:"]
    lines += [f"  - {item}" for item in tried]
    if existing_problem is not None:
        lines.append(f"The file already at {dest} was not used: {existing_problem}.")
    first_url = next((s.location for s in entry.sources if s.kind == "url"), entry.sources[0].describe())
    lines.append(
        f"To provide it by hand: download {first_url} yourself and put it at {dest}, "
        f"or run `python -m demo convert /path/to/{entry.file_name}`."
    )
    if access_denied:
        lines.append(
            f"A Hugging Face mirror refused access: it may be gated or private. Accept its terms on the website and "
            f"set {HF_TOKEN_ENV} (or pass --token)."
        )
    if any(s.location.startswith(_NGC_FILES) for s in entry.sources):
        lines.append(f"NVIDIA's catalog page for the files: {_NGC_CATALOG}")
    lines.append(f"Licence: {entry.licence} ({entry.licence_url}).")
    lines.append("To try the tools without it: --model tiny (a small random model; results are noise, not faces).")
    return "\n".join(lines)


def _verify(
    path: Path, entry: CheckpointEntry, server_size: int | None, progress: ProgressFn | None = None
) -> str | None:
    """None when ``path`` has the expected size and hash, else a short description of the problem."""
    size = path.stat().st_size
    expected = entry.size_bytes if entry.size_bytes is not None else server_size
    if size == 0:
        return "the file is empty"
    if expected is not None and size != expected:
        return f"size is {size:,} bytes, expected {expected:,}"
    if entry.sha256 is None and entry.sha256_prefix is None:
        return None
    report(progress, 1.0, f"checking sha256 of {path.name}")
    digest = file_sha256(path)
    if entry.sha256 is not None and digest != entry.sha256:
        return f"sha256 is {digest}, expected {entry.sha256}"
    if entry.sha256_prefix is not None and not digest.startswith(entry.sha256_prefix):
        return f"sha256 is {digest}, expected one starting with {entry.sha256_prefix}"
    return None


def file_sha256(path: Path) -> str:
    """Lowercase hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _megabytes(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f}"


def _fetch_huggingface(source: CheckpointSource, dest: Path, *, token: str | None, progress: ProgressFn | None) -> Path:
    """Download through the Hugging Face cache (resumes by itself); link or copy next to ``dest``."""
    # Imported only here: importing demo must not need huggingface_hub, nor touch the network.
    import huggingface_hub
    from huggingface_hub import constants as hf_constants

    label = dest.name
    # huggingface_hub retries a failed connection five times with back-off (about 25 s). When the
    # endpoint does not answer at all (no DNS, nothing listening) we are offline: look in the local
    # Hugging Face cache only, at once.
    endpoint = hf_constants.ENDPOINT.rstrip("/")
    cache_only = not _endpoint_answers(endpoint)
    where = "the local Hugging Face cache (offline)" if cache_only else source.describe()
    report(progress, 0.0, f"{label}: looking in {where}")
    try:
        cached = huggingface_hub.hf_hub_download(
            repo_id=source.location,
            filename=source.filename,
            token=token,
            etag_timeout=SOCKET_TIMEOUT_S,
            local_files_only=cache_only,
            tqdm_class=_hf_progress_class(progress, label),
        )
    except Exception as exc:  # any failure of a mirror means "try the next source"
        logger.debug("hf_hub_download failed", exc_info=True)
        if cache_only:
            raise _SourceFailed(f"{endpoint} does not answer (offline?) and the file is not in the Hugging Face cache") from exc
        raise _describe_hf_error(exc, endpoint) from exc

    temporary = dest.with_name(dest.name + ".tmp")
    temporary.unlink(missing_ok=True)
    blob = Path(cached).resolve()
    try:
        os.link(blob, temporary)  # no second copy on disk when the cache is on the same volume
    except OSError:
        try:
            shutil.copyfile(blob, temporary)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise _SourceFailed(f"could not copy {blob} to {temporary}: {exc}") from exc
    return temporary


def _endpoint_answers(url: str, timeout_s: float = 3.0) -> bool:
    """Whether something accepts a TCP connection at ``url``'s host and port within ``timeout_s``."""
    parsed = urllib.parse.urlparse(url)
    if not parsed.hostname:
        return False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _describe_hf_error(exc: Exception, endpoint: str) -> _SourceFailed:
    """What a failed ``hf_hub_download`` means, in words, with the endpoint it went to."""
    name = type(exc).__name__
    text = str(exc)
    first_line = text.strip().splitlines()[0] if text.strip() else name
    status = re.search(r"\b(401|403|404)\b", text)
    if name == "GatedRepoError" or (status is not None and status.group(1) in ("401", "403")):
        return _SourceFailed(f"access denied by {endpoint} ({first_line}): log in or set {HF_TOKEN_ENV}", access_denied=True)
    if name == "RepositoryNotFoundError":
        return _SourceFailed(
            f"not found at {endpoint} (the Hub answers the same for private repositories: set {HF_TOKEN_ENV} if it is yours)",
            access_denied=True,
        )
    if name in ("EntryNotFoundError", "RevisionNotFoundError") or (status is not None and status.group(1) == "404"):
        return _SourceFailed(f"not found at {endpoint} ({first_line})")
    if name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return _SourceFailed(f"could not reach {endpoint}, and the file is not in the Hugging Face cache")
    return _SourceFailed(f"{name}: {first_line}")


def _hf_progress_class(progress: ProgressFn | None, label: str):
    """A tqdm class for ``hf_hub_download`` that forwards to ``progress`` instead of printing."""
    if progress is None:
        return None
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _ForwardingBar(hf_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["file"] = io.StringIO()  # display() is overridden; nothing reaches a terminal
            super().__init__(*args, **kwargs)

        def display(self, msg=None, pos=None):  # tqdm calls this instead of printing
            total = int(self.total or 0)
            done = int(self.n)
            if total:
                report(progress, done / total, f"{label}: {_megabytes(done)} / {_megabytes(total)} MB")
            else:
                report(progress, 0.0, f"{label}: {_megabytes(done)} MB")
            return True

    return _ForwardingBar


def _fetch_url(url: str, dest: Path, entry: CheckpointEntry, *, progress: ProgressFn | None) -> tuple[Path, int | None]:
    """Stream ``url`` into ``<dest>.part``, resuming it; return the part file and the server's size."""
    part = dest.with_name(dest.name + ".part")
    expected = entry.size_bytes
    offset = part.stat().st_size if part.is_file() else 0
    if expected is not None and offset > expected:
        part.unlink()
        offset = 0
    if expected is not None and offset == expected:
        return part, expected  # a previous run finished the transfer but not the rename

    for attempt in range(2):
        headers = {"User-Agent": _USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=SOCKET_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset and attempt == 0:
                total = _content_range_total(exc.headers.get("Content-Range"))
                if total == offset:
                    return part, total
                logger.info("Server refused to resume %s; starting over", part)
                part.unlink(missing_ok=True)
                offset = 0
                continue
            raise _SourceFailed(_describe_http_error(exc)) from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _SourceFailed(_describe_network_error(exc)) from exc

        with response:
            status = getattr(response, "status", 200)
            if offset and status == 206 and _content_range_start(response.headers.get("Content-Range")) == offset:
                mode = "ab"
                total = _content_range_total(response.headers.get("Content-Range"))
            else:
                if offset:
                    logger.info("Server ignored the Range request for %s; starting over", url)
                mode, offset = "wb", 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            if total is None:
                total = expected
            done = offset
            try:
                with open(part, mode) as handle:
                    while chunk := response.read(CHUNK_BYTES):
                        handle.write(chunk)
                        done += len(chunk)
                        if total:
                            message = f"{dest.name}: {_megabytes(done)} / {_megabytes(total)} MB"
                            report(progress, min(done / total, 0.999), message)
                        else:
                            report(progress, 0.0, f"{dest.name}: {_megabytes(done)} MB")
            except (OSError, http.client.HTTPException) as exc:
                # Keep the .part file: the next call resumes from where this one stopped.
                raise _SourceFailed(
                    f"interrupted after {_megabytes(done)} MB ({_describe_network_error(exc)}); "
                    f"run the download again to resume from {part}"
                ) from exc
        return part, total
    raise _SourceFailed("the server refused to resume and to restart the transfer")


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/1000"
    try:
        return int(value.split()[1].split("-")[0]) if value else None
    except (IndexError, ValueError):
        return None


def _content_range_total(value: str | None) -> int | None:
    # "bytes 100-199/1000" or "bytes */1000"
    try:
        total = value.rsplit("/", 1)[1] if value else "*"
        return int(total) if total != "*" else None
    except (IndexError, ValueError):
        return None


def _describe_http_error(exc: urllib.error.HTTPError) -> str:
    text = f"HTTP {exc.code} {exc.reason}"
    if exc.code in (401, 403):
        text += " (access denied: the file may need a login; download it in a browser instead)"
    elif exc.code == 404:
        text += " (the file is no longer at this address)"
    return text


def _describe_network_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {SOCKET_TIMEOUT_S:.0f} s"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return f"no answer within {SOCKET_TIMEOUT_S:.0f} s"
        return f"network error: {reason} (offline?)"
    return f"{type(exc).__name__}: {exc}"
