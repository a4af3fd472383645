"""A local stand-in for the Kaggle API (only what the kaggle client calls to download data), a plain
HTTP file server, both on loopback, and the archives they serve."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import threading
import time
import zipfile
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.conftest import FORMATS

COMPETITION_CALL = "/api/v1/competitions.CompetitionApiService/DownloadDataFiles"
COMPETITION_FILE_CALL = "/api/v1/competitions.CompetitionApiService/DownloadDataFile"
DATASET_CALL = "/api/v1/datasets.DatasetApiService/DownloadDataset"


def planet_zip(extra_rows: int = 0, slip: bool = False) -> bytes:
    """A Planet-format mini data set: train_v2.csv and train-jpg/*.jpg, as Kaggle serves it zipped."""
    lines = (FORMATS / "planet_train_v2.csv").read_text().splitlines()
    lines += [f"train_extra_{i},clear primary" for i in range(extra_rows)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train_v2.csv", "\n".join(lines) + "\n")
        for index, line in enumerate(lines[1:]):
            image = io.BytesIO()
            write_image_bytes(image, (index * 40 % 255, 80, 200))
            archive.writestr(f"train-jpg/{line.split(',')[0]}.jpg", image.getvalue())
        if slip:
            archive.writestr("../../outside.txt", "zip-slip")
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def tar_bytes(files: dict[str, bytes], mode: str = "w:gz", links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as handle:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            handle.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            handle.addfile(info)
    return buffer.getvalue()


def seven_zip_bytes(files: dict[str, bytes]) -> bytes:
    import py7zr

    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(content, name)
    return buffer.getvalue()


def planet_files(extra_rows: int = 0) -> dict[str, bytes]:
    """planet_zip's files by name."""
    with zipfile.ZipFile(io.BytesIO(planet_zip(extra_rows))) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_image_bytes(buffer: io.BytesIO, color: tuple[int, int, int]) -> None:
    from PIL import Image

    Image.new("RGB", (16, 16), color).save(buffer, format="JPEG")


class KaggleStandIn:
    """Answers DownloadDataFiles, DownloadDataFile and DownloadDataset with a redirect to a file it
    serves, as Kaggle redirects to its storage."""

    def __init__(self, username: str, key: str):
        self.auth = "Basic " + base64.b64encode(f"{username}:{key}".encode()).decode()
        self.files: dict[str, tuple[bytes, float]] = {}  # path under /files/ -> (content, modified)
        self.fail_next: list[int] = []  # statuses to answer the next API calls with
        self.calls: list[str] = []  # "POST <path>" and "GET <path>" in order
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, name: str, content: bytes, modified: float | None = None) -> None:
        """All files of a competition or dataset (`owner/slug`), zipped."""
        self.files[f"{name.replace('/', '__')}.zip"] = (content, modified or time.time())

    def publish_file(self, competition: str, file_name: str, content: bytes) -> None:
        """One file of a competition."""
        self.files[f"{competition}/{file_name}"] = (content, time.time())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                standin.calls.append(f"POST {self.path}")
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.headers.get("Authorization") != standin.auth:
                    return self.answer(401, {"code": 401, "message": "Unauthenticated"})
                if standin.fail_next:
                    status = standin.fail_next.pop(0)
                    return self.answer(status, {"code": status, "message": f"stand-in says {status}"})
                if self.path == COMPETITION_CALL:
                    path = f"{request.get('competitionName')}.zip"
                elif self.path == COMPETITION_FILE_CALL:
                    path = f"{request.get('competitionName')}/{request.get('fileName')}"
                elif self.path == DATASET_CALL:
                    path = f"{request.get('ownerSlug')}__{request.get('datasetSlug')}.zip"
                else:
                    return self.answer(404, {"code": 404, "message": "no such call"})
                if path not in standin.files:
                    return self.answer(404, {"code": 404, "message": "Not found"})
                self.send_response(302)
                self.send_header("Location", f"{standin.url}/files/{path}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                standin.calls.append(f"GET {self.path}")
                path = self.path.removeprefix("/files/")
                if path not in standin.files:
                    return self.answer(404, {"code": 404, "message": "Not found"})
                content, modified = standin.files[path]
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(content)))
                self.send_header("Last-Modified", formatdate(modified, usegmt=True))
                self.end_headers()
                self.wfile.write(content)

        return Handler


class FileServer:
    """A plain HTTP server of a folder (for url sources); it records the requests, and answers the next
    ones with the statuses in `fail_next` first."""

    def __init__(self, folder: Path, required_headers: dict[str, str] | None = None):
        self.calls: list[str] = []  # "HEAD <path>" and "GET <path>" in order
        self.fail_next: list[int] = []
        self.required_headers = required_headers or {}  # else 401: a server that wants credentials
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler(folder))
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handler(self, folder: Path):
        files = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args):
                super().__init__(*args, directory=str(folder))

            def log_message(self, *args):  # quiet
                pass

            def send_head(self):
                files.calls.append(f"{self.command} {self.path}")
                if any(self.headers.get(name) != value for name, value in files.required_headers.items()):
                    self.send_error(401)
                    return None
                if files.fail_next:
                    self.send_error(files.fail_next.pop(0))
                    return None
                return super().send_head()

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
