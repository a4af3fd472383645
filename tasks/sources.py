"""Bring remote labeled data into the source folder, where ingest reads it like a local source.

- kaggle: a competition (all files, or `source.files`) or a dataset, downloaded with the `kaggle`
  client, which skips a file whose remote copy is not newer than the local one;
- url: a folder or an archive at any fsspec URL; a file is downloaded again only when its size,
  date or ETag changed.

Archives are extracted safely (tasks.archives) only when they changed. Errors are either
transient (network, 5xx, a corrupt download: the pull task retries) or say what to do (bad
credentials, rules not accepted, nothing at that name). Credentials never appear in messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foldwise.config import FoldwiseConfig
from foldwise.errors import FoldwiseError
from tasks.archives import CorruptArchive, extract, is_archive
from tasks.logs import get_logger

MARKER = ".foldwise-fetch.json"
CREDENTIAL_HELP = (
    "Kaggle credentials not found: set KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY, "
    "or put kaggle.json in ~/.kaggle (or in KAGGLE_CONFIG_DIR); see https://www.kaggle.com/settings/api"
)


class SourceError(FoldwiseError, ValueError):
    """A source that cannot be pulled until the user changes something; the message says what."""


class TransientSourceError(ConnectionError):
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
    for secret in known_secrets():
        text = text.replace(secret, "***")
    return text


def read_marker(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {"downloaded": {}, "extracted": {}}


def write_marker(folder: Path, marker: dict[str, Any]) -> None:
    (folder / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))


def file_stamp(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]


def kaggle_error(error: Exception, what: str) -> Exception:
    """An HTTP error of the Kaggle API as an error that says what to do, or as a transient one."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    if status == 401:
        return SourceError(
            f"Kaggle rejected the credentials (401) for {what}: check KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY, or kaggle.json"
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


def kaggle_download(config: FoldwiseConfig, folder: Path) -> None:
    import requests

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
    except requests.RequestException as error:
        raise TransientSourceError(f"cannot reach Kaggle for {what}: {redact(str(error))}") from None
    if printed.getvalue().strip():
        get_logger(__name__).debug("kaggle: %s", redact(printed.getvalue().strip()))


def remote_stamp(info: dict[str, Any]) -> str:
    keys = ("size", "mtime", "ETag", "etag", "LastModified", "last_modified", "updated", "md5", "Content-MD5")
    return json.dumps({key: str(info[key]) for key in keys if key in info}, sort_keys=True)


def url_download(config: FoldwiseConfig, folder: Path, marker: dict[str, Any]) -> list[str]:
    """Download what changed at the URL (one archive or file, or every file under a folder)."""
    import fsspec

    url = config.source.url
    try:
        fs, root = fsspec.core.url_to_fs(url)
        entries = [root] if is_archive(root) or not fs.isdir(root) else sorted(fs.find(root))
        downloaded = []
        for entry in entries:
            relative = Path(entry).name if entry == root else Path(entry).relative_to(root).as_posix()
            stamp = remote_stamp(fs.info(entry))
            local = folder / relative
            if marker["downloaded"].get(relative) == stamp and local.is_file():
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            partial = local.with_name(local.name + ".partial")
            fs.get(entry, str(partial))
            partial.replace(local)
            marker["downloaded"][relative] = stamp
            downloaded.append(relative)
    except FileNotFoundError:
        raise SourceError(f"nothing at source.url {url}") from None
    except PermissionError as error:
        raise SourceError(f"no permission to read source.url {url}: {redact(str(error))}") from None
    except (OSError, ValueError) as error:  # fsspec's network and server errors
        raise TransientSourceError(
            f"cannot fetch {url}: {type(error).__name__}: {redact(str(error))}"
        ) from None
    except Exception as error:  # aiohttp and cloud clients have their own exception types
        if type(error).__module__.split(".")[0] in {"aiohttp", "botocore", "google"}:
            raise TransientSourceError(
                f"cannot fetch {url}: {type(error).__name__}: {redact(str(error))}"
            ) from None
        raise
    return downloaded


def place_downloads(folder: Path, target: Path, marker: dict[str, Any]) -> list[str]:
    """Extract changed archives into the source folder; copy plain files there."""
    placed = []
    for path in sorted(
        p for p in folder.rglob("*") if p.is_file() and p.name != MARKER and not p.name.endswith(".partial")
    ):
        relative = path.relative_to(folder).as_posix()
        if marker["extracted"].get(relative) == file_stamp(path):
            continue
        if is_archive(path.name):
            try:
                extract(path, target)
            except CorruptArchive:
                path.unlink()  # downloaded again by the retry
                marker["downloaded"].pop(relative, None)
                raise
        else:
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(path.read_bytes())
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
        before = {p.name: file_stamp(p) for p in folder.iterdir() if p.is_file()}
        kaggle_download(config, folder)
        summary.downloaded = sorted(
            p.name
            for p in folder.iterdir()
            if p.is_file() and p.name != MARKER and before.get(p.name) != file_stamp(p)
        )
    else:
        summary.downloaded = url_download(config, folder, marker)
    write_marker(folder, marker)
    summary.extracted = place_downloads(folder, source.path, marker)
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
