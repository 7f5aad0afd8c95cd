"""The `POST /v1/understand` form: text fields, and one uploaded file per input modality.

Files are written to a private temporary folder under a cleaned version of the client's
file name (the extension tells point-cloud and EEG readers the format), so a processor's
error names the file the user chose and nothing of the server's disk.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import FormData, UploadFile

from modal_core.errors import ServeError

TEXT_FIELDS = ("question", "max_new_tokens", "temperature", "seed")
_CHUNK = 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UploadError(ServeError):
    """A form that cannot be accepted; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Uploads:
    """Saved files by modality name, in a folder the caller removes with `cleanup`."""

    folder: Path
    files: dict[str, Path]

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def scrub(self, message: str) -> str:
        """`message` with the temporary folders removed from file paths."""
        for path in self.files.values():
            message = message.replace(f"{path.parent}/", "")
        return message.replace(str(self.folder), "<upload>")


def split_form(form: FormData, upload_fields: dict[str, str]) -> tuple[dict[str, str], dict[str, UploadFile]]:
    """Text fields and files of the form; `upload_fields` maps field name -> modality.
    Unknown, repeated or mistyped fields are an `UploadError` saying what is accepted."""
    text: dict[str, str] = {}
    files: dict[str, UploadFile] = {}
    for key, value in form.multi_items():
        if key in text or key in files:
            raise UploadError(f"field {key!r} was sent more than once")
        if key in TEXT_FIELDS:
            if not isinstance(value, str):
                raise UploadError(f"field {key!r} must be text, got a file")
            if value.strip() or key == "question":
                text[key] = value
            elif key == "seed":
                text[key] = None  # an empty seed box asks for a fresh random draw
        elif key in upload_fields:
            if not isinstance(value, UploadFile):
                raise UploadError(f"field {key!r} must be a file upload (multipart/form-data), got text")
            if value.filename or value.size:  # browsers send an empty part for an unused file input
                files[key] = value
        else:
            accepted = ", ".join(f"{field} ({name})" for field, name in upload_fields.items()) or "none"
            raise UploadError(
                f"unknown field {key!r}: this model has no input modality with that upload field. "
                f"Text fields: {', '.join(TEXT_FIELDS)}; file uploads: {accepted}"
            )
    return text, files


async def save_uploads(files: dict[str, UploadFile], upload_fields: dict[str, str], max_bytes: int) -> Uploads:
    """Write each upload to a fresh private folder, refusing any over `max_bytes` (413)."""
    folder = Path(tempfile.mkdtemp(prefix="modal-core-serve-"))
    uploads = Uploads(folder, {})
    try:
        for field, upload in files.items():
            path = folder / field / _clean_name(upload.filename, field)
            path.parent.mkdir()
            written = 0
            with path.open("wb") as out:
                while chunk := await upload.read(_CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise UploadError(
                            f"{field} upload {upload.filename or ''!r} is larger than the {_size(max_bytes)} limit (--max-upload-mb)", 413
                        )
                    out.write(chunk)
            uploads.files[upload_fields[field]] = path
    except BaseException:
        uploads.cleanup()
        raise
    return uploads


def _clean_name(filename: str | None, field: str) -> str:
    name = _UNSAFE.sub("_", Path(filename or "").name).strip("._")
    return name[-100:] or f"upload-{field}"


def _size(count: int) -> str:
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:g} {unit}"
    return f"{count} bytes"
