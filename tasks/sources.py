"""Bring remote labeled data into the source folder, where ingest reads it like a local source.

- kaggle: a competition (all files, or `source.files`) or a dataset, downloaded with the `kaggle`
  client, which skips a file whose remote copy is not newer than the local one;
- url: a folder or an archive at any fsspec URL; a file is downloaded again only when its size,
  date or ETag changed.

Archives are extracted safely (tasks.archives) only when they changed. Errors are either
transient (a refused or dropped connection, 5xx: the pull task retries) or say what to do (bad
credentials, rules not accepted, nothing at that name, a corrupt download, which is deleted so that
the next pull downloads it again, a full disk). Credentials never appear in messages.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foldwise import secrets
from foldwise.config import FoldwiseConfig, SourceConfig
from foldwise.errors import NO_SPACE, FoldwiseError, disk_error, is_disk_error
from foldwise.files import atomic_file, partial_path
from foldwise.tasks.archives import CorruptArchive, extract, is_archive
from foldwise.tasks.logs import get_logger

MARKER = ".foldwise-fetch.json"
CREDENTIAL_HELP = (
    "Kaggle credentials not found: set KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY, "
    "or put kaggle.json in ~/.kaggle (or in KAGGLE_CONFIG_DIR); see https://www.kaggle.com/settings/api"
)


class SourceError(FoldwiseError, ValueError):
    """A source that cannot be pulled until the user changes something; the message says what."""


class TransientSourceError(FoldwiseError, ConnectionError):
    """A network or server hiccup: the pull is retried."""


@dataclass
class FetchSummary:
    downloaded: list[str] = field(default_factory=list)
    extracted: list[str] = field(default_factory=list)


def known_secrets() -> list[str]:
    """Credential values this process can see, so that no message ever repeats them."""
    values = [os.environ.get(name, "") for name in ("KAGGLE_API_TOKEN", "KAGGLE_KEY")]
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    with contextlib.suppress(OSError, ValueError):
        values += [
            str(v) for k, v in json.loads((config_dir / "kaggle.json").read_text()).items() if k != "username"
        ]
    with contextlib.suppress(OSError):
        values.append((config_dir / "access_token").read_text().strip())
    return [value for value in values if len(value) >= 4]


def redact(text: str) -> str:
    """The text with Kaggle's credentials and any other known or URL-shaped credential masked."""
    secrets.remember(*known_secrets())
    return secrets.mask(text)


def read_marker(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {"downloaded": {}, "extracted": {}}


def write_marker(folder: Path, marker: dict[str, Any]) -> None:
    with atomic_file(folder / MARKER) as partial:
        partial.write_text(json.dumps(marker, indent=1, sort_keys=True))


def file_stamp(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]


def kaggle_error(error: Exception, what: str) -> Exception:
    """An HTTP error of the Kaggle API as an error that says what to do, or as a transient one."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    if status == 401:
        return SourceError(
            f"Kaggle rejected the credentials (401) for {what}: check KAGGLE_API_TOKEN, or "
            "KAGGLE_USERNAME and KAGGLE_KEY, or kaggle.json"
        )
    if status == 403:
        return SourceError(
            f"Kaggle refused access (403) to {what}: if it is a competition, accept its rules on kaggle.com "
            "with the account of these credentials; if it is a private dataset, ask for access"
        )
    if status == 404:
        return SourceError(f"Kaggle has no {what} (404): check source.competition / source.dataset")
    return TransientSourceError(f"Kaggle API error for {what}: {redact(str(error))}")


def kaggle_api():
    """An authenticated KaggleApi; the client's own lookup of credentials, its exit(1) caught."""
    with contextlib.redirect_stdout(io.StringIO()):  # importing the package prints help without credentials
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        try:
            api.authenticate()
        except SystemExit:
            raise SourceError(CREDENTIAL_HELP) from None
    return api


def changed_files(folder: Path, before: dict[str, list[int]]) -> list[Path]:
    """The files of `folder` that are new or changed since `before` (name -> file_stamp)."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.name != MARKER and before.get(path.name) != file_stamp(path)
    )


def kaggle_download(config: FoldwiseConfig, folder: Path) -> list[str]:
    """Download what changed (the client's own check); the names of the files it wrote."""
    import requests

    before = {path.name: file_stamp(path) for path in folder.iterdir() if path.is_file()}
    source = config.source
    what = f"competition {source.competition}" if source.competition else f"dataset {source.dataset}"
    api = kaggle_api()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            if source.competition and source.files:
                for name in source.files:
                    api.competition_download_file(source.competition, name, path=str(folder), quiet=True)
            elif source.competition:
                api.competition_download_files(source.competition, path=str(folder), quiet=True)
            else:
                api.dataset_download_files(source.dataset, path=str(folder), quiet=True)
    except requests.HTTPError as error:
        raise kaggle_error(error, what) from None
    except requests.RequestException as error:  # an OSError too: before the disk's
        raise TransientSourceError(f"cannot reach Kaggle for {what}: {redact(str(error))}") from None
    except OSError as error:
        if not is_disk_error(error):
            raise
        for path in changed_files(folder, before):  # what the client wrote, in part: nothing half-written
            path.unlink()
        raise disk_error(
            error, folder, f"cannot download {what} into {folder}", "Nothing was ingested"
        ) from None
    if printed.getvalue().strip():
        get_logger(__name__).debug("kaggle: %s", redact(printed.getvalue().strip()))
    return [path.name for path in changed_files(folder, before)]


def remote_stamp(info: dict[str, Any]) -> str:
    keys = ("size", "mtime", "ETag", "etag", "LastModified", "last_modified", "updated", "md5", "Content-MD5")
    return json.dumps({key: str(info[key]) for key in keys if key in info}, sort_keys=True)


# Errors that can only be this machine's (a remote's refusal may come as EACCES: its filename tells).
LOCAL_DISK_ERRORS = NO_SPACE | {errno.EROFS}


def is_connection_problem(error: BaseException) -> bool:
    """The server was not reached or failed (a refused or dropped connection, 5xx): worth retrying."""
    status = getattr(error, "status", None)
    if isinstance(status, int):  # aiohttp's ClientResponseError
        return status >= 500 or status in (408, 429)
    if isinstance(error, OSError):  # refused, reset, timed out, DNS: aiohttp's connector errors too
        return not isinstance(error, (FileNotFoundError, PermissionError))
    return type(error).__module__.split(".")[0] == "aiohttp"  # a server that hung up, a cut payload


def local_error(error: OSError, folder: Path, doing: str, kept: str) -> FoldwiseError:
    """An error of this machine's file system under `folder`: a full disk or a refused write as a
    DiskError (the path, its free space), any other as it is."""
    if is_disk_error(error):
        return disk_error(error, folder, doing, kept)
    where = f" ({error.filename})" if error.filename else ""
    return SourceError(f"{doing}: {error.strerror or error}{where}; fix what the error says. {kept}")


def url_error(error: Exception, url: str, folder: Path) -> Exception:
    """An error of fsspec as one that says what to fix, or as a transient one (retried)."""
    where = f"source.url {redact(url)}"
    if isinstance(error, OSError) and (
        error.errno in LOCAL_DISK_ERRORS or str(error.filename or "").startswith(str(folder))
    ):
        return local_error(error, folder, f"cannot download {where} into {folder}", "Nothing was ingested")
    # fsspec's HTTP file system raises FileNotFoundError for any failure to get a file's details
    # (a refused connection and a 503 too), with the real error as its cause.
    cause = error.__cause__ if isinstance(error, FileNotFoundError) and error.__cause__ else error
    if is_connection_problem(cause) or type(cause).__module__.split(".")[0] in {"botocore", "google"}:
        return TransientSourceError(f"cannot fetch {where}: {type(cause).__name__}: {redact(str(cause))}")
    status = getattr(cause, "status", None)
    if status in (401, 403) or isinstance(cause, PermissionError):
        return SourceError(
            f"no access to {where} ({status or redact(str(cause))}): check the credentials in the URL "
            "or the storage's settings"
        )
    if status in (404, 410) or isinstance(cause, FileNotFoundError):
        return SourceError(f"nothing at {where}" + (f" ({status})" if status else "") + ": check source.url")
    if isinstance(status, int):
        return SourceError(f"{where} answered {status}: {redact(str(cause))}")
    return error  # a bug, with its traceback


def url_download(config: FoldwiseConfig, folder: Path, marker: dict[str, Any]) -> list[str]:
    """Download what changed at the URL (one archive or file, or every file under a folder)."""
    import fsspec

    url = config.source.resolved_url()
    try:
        fs, root = fsspec.core.url_to_fs(url, **config.source.resolved_storage_options())
    except (ValueError, ImportError) as error:  # an unknown scheme, a file system not installed
        raise SourceError(f"cannot open source.url {redact(url)}: {redact(str(error))}") from None
    downloaded = []
    try:
        entries = [root] if is_archive(root) or not fs.isdir(root) else sorted(fs.find(root))
        for entry in entries:
            relative = Path(entry).name if entry == root else Path(entry).relative_to(root).as_posix()
            stamp = remote_stamp(fs.info(entry))
            local = folder / relative
            if marker["downloaded"].get(relative) == stamp and local.is_file():
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            partial = partial_path(local)
            try:
                fs.get(entry, str(partial))
                partial.replace(local)
            finally:
                partial.unlink(missing_ok=True)
            marker["downloaded"][relative] = stamp
            downloaded.append(relative)
    except Exception as error:
        raise url_error(error, url, folder) from None
    return downloaded


def place_downloads(folder: Path, source: SourceConfig, marker: dict[str, Any]) -> list[str]:
    """Extract changed archives into the source folder; copy plain files there."""
    placed = []
    for path in sorted(
        p for p in folder.rglob("*") if p.is_file() and p.name != MARKER and not p.name.endswith(".partial")
    ):
        relative = path.relative_to(folder).as_posix()
        if marker["extracted"].get(relative) == file_stamp(path):
            continue
        doing = f"cannot place {path.name} into {source.path}"
        kept = f"The download is kept in {folder}: the next pull places it again"
        try:
            if is_archive(path.name):
                extract(path, source.path, source)
            else:
                destination = source.path / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                with atomic_file(destination, doing, kept) as partial:
                    shutil.copyfile(path, partial)
        except CorruptArchive as error:
            path.unlink()
            marker["downloaded"].pop(relative, None)
            raise CorruptArchive(
                f"{error}. The download {path} was deleted: the next pull downloads it again"
            ) from None
        except OSError as error:
            raise local_error(error, source.path, doing, kept) from None
        marker["extracted"][relative] = file_stamp(path)
        placed.append(relative)
    return placed


def fetch(config: FoldwiseConfig) -> FetchSummary:
    """Bring the remote source up to date in `source.path`; a local source needs nothing."""
    source = config.source
    if source.kind == "local":
        return FetchSummary()
    name = source.competition or source.dataset or hashlib.sha256(source.url.encode()).hexdigest()[:16]
    folder = config.data_home / "downloads" / source.kind / name.replace("/", "__")
    folder.mkdir(parents=True, exist_ok=True)
    marker = read_marker(folder)
    summary = FetchSummary()
    if source.kind == "kaggle":
        summary.downloaded = kaggle_download(config, folder)
    else:
        summary.downloaded = url_download(config, folder, marker)
    write_marker(folder, marker)
    summary.extracted = place_downloads(folder, source, marker)
    write_marker(folder, marker)
    log = get_logger(__name__)
    if summary.downloaded or summary.extracted:
        log.info(
            "%s source: downloaded %s, extracted %s",
            source.kind,
            summary.downloaded or "nothing",
            summary.extracted or "nothing",
        )
    else:
        log.info("%s source is up to date: nothing downloaded", source.kind)
    return summary
