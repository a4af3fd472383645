"""Credentials are used, never stored, logged, sent to Prefect or shown.

A setting that may hold a credential (`database_url`, `source.url`, `source.storage_options`) can name
it instead: `${env:NAME}` is an environment variable, `${secret:NAME}` a Prefect Secret block. The
reference is what the config, the database, Prefect and the dashboard keep; its value is looked up
only where the setting is used (`resolve`). A credential written into a setting itself (a password
in a URL) works for a run started in this process, but is masked (`***`) wherever a setting is
stored or shown, and `foldwise serve` refuses it: a deployment's parameters are stored by Prefect.

Every value resolved here is remembered by the process, and `mask` replaces it (and any URL password
or credential-carrying query parameter) in log records, error messages and run records.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any
from urllib.parse import quote, unquote

from foldwise.errors import FoldwiseError

REFERENCE = re.compile(r"\$\{(?P<kind>env|secret):(?P<name>[A-Za-z0-9_.\-]+)\}")
# The password of scheme://user:password@host (it may hold a raw '@': the last one before the path
# ends it), and the value of a query parameter that carries a credential (?token=, &sig=, ...).
URL_PASSWORD = re.compile(r"(?P<keep>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<password>[^/\s]*)(?=@)")
QUERY_CREDENTIAL = re.compile(
    r"(?P<keep>[?&][^=&#\s]*(?:token|sig|signature|secret|password|key|credential)[^=&#\s]*=)[^&#\s]+",
    re.IGNORECASE,
)
SECRET_KEY_WORDS = ("password", "secret", "token", "key", "credential", "authorization", "auth")
MASK = "***"
_remembered: set[str] = set()


class SecretUnavailable(FoldwiseError):
    """A setting names a credential that cannot be found."""


def remember(*values: str) -> None:
    """Mask these values (and their URL-encoded forms) from now on in this process."""
    for value in values:
        if len(value) >= 4:
            _remembered.update({value, quote(value, safe=""), unquote(value)})


def is_reference(text: str) -> bool:
    return REFERENCE.fullmatch(text) is not None


def resolve(text: str) -> str:
    """The setting with each `${env:...}` and `${secret:...}` replaced by its value (remembered)."""

    def value(match: re.Match) -> str:
        kind, name = match["kind"], match["name"]
        if kind == "env":
            found = os.environ.get(name)
            if found is None:
                raise SecretUnavailable(f"environment variable {name} is not set (named by ${{env:{name}}})")
        else:
            found = prefect_secret(name)
        remember(found)
        return found

    resolved = REFERENCE.sub(value, text)
    password = URL_PASSWORD.search(resolved)
    if password:
        remember(password["password"])
    return resolved


def prefect_secret(name: str) -> str:
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(name).get())
    except (ValueError, KeyError) as error:
        raise SecretUnavailable(
            f"no Prefect Secret block {name!r} (named by ${{secret:{name}}}): {error}"
        ) from None


def mask(text: str) -> str:
    """The text with every known credential replaced by ***; references `${...}` are kept."""
    for value in sorted(_remembered, key=len, reverse=True):
        text = text.replace(value, MASK)

    def url_password(match: re.Match) -> str:
        keep = is_reference(match["password"]) or match["password"] in ("", MASK)
        return match[0] if keep else match["keep"] + MASK

    text = URL_PASSWORD.sub(url_password, text)
    return QUERY_CREDENTIAL.sub(r"\g<keep>" + MASK, text)


def literal_credentials(text: str | None) -> bool:
    """A URL that holds a credential itself rather than naming it."""
    return text is not None and mask(REFERENCE.sub("", text)) != REFERENCE.sub("", text)


def is_secret_key(key: str) -> bool:
    return any(word in key.lower() for word in SECRET_KEY_WORDS)


def mask_options(options: Any, key: str = "") -> Any:
    """Options (fsspec's storage options) with the values of credential-like keys masked."""
    if isinstance(options, dict):
        return {name: mask_options(value, name) for name, value in options.items()}
    if isinstance(options, list):
        return [mask_options(value, key) for value in options]
    if isinstance(options, str):
        return options if is_reference(options) or not is_secret_key(key) else MASK
    return options


def resolve_options(options: Any) -> Any:
    if isinstance(options, dict):
        return {name: resolve_options(value) for name, value in options.items()}
    if isinstance(options, list):
        return [resolve_options(value) for value in options]
    return resolve(options) if isinstance(options, str) else options


def mask_exception(error: BaseException | None) -> None:
    """Mask credentials in an exception's message in place (and in its causes)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.args = tuple(mask(arg) if isinstance(arg, str) else arg for arg in error.args)
        if isinstance(error, OSError) and isinstance(error.filename, str):
            error.filename = mask(error.filename)
        error = error.__cause__ or error.__context__


class _MaskingRecordFactory:
    """Builds every log record with credentials masked: message, arguments and traceback."""

    def __init__(self, factory):
        self.factory = factory

    def __call__(self, *args, **kwargs) -> logging.LogRecord:
        record = self.factory(*args, **kwargs)
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and record.exc_info[1] is not None:
            mask_exception(record.exc_info[1])
        return record


def install_log_masking() -> None:
    """Mask credentials in every log record this process makes from now on (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _MaskingRecordFactory):
        logging.setLogRecordFactory(_MaskingRecordFactory(factory))
