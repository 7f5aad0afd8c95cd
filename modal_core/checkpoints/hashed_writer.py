"""Write safetensors files in one pass while hashing the bytes, so a checkpoint's manifest
holds a content hash at no extra read of what was just written.

safetensors' own writer (Rust, `save_file`) writes a whole file with no hook on its bytes;
the format is a length-prefixed JSON header and the raw tensor bytes, written here as the
specification gives it and read back with safetensors' own loader.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import torch

PENDING_DIGESTS = ".digests.json"
"""Where the digests of files written here wait, in their folder, for the manifest."""
DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint64: "U64",
    torch.uint32: "U32",
    torch.uint16: "U16",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def save_hashed(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> str:
    """Write `tensors` as a safetensors file (each copied to the CPU in turn, so tensors on
    an accelerator need no second full copy); returns its SHA-256 and records it for
    the folder's manifest."""
    path = Path(path)
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": DTYPES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        for chunk in (struct.pack("<Q", len(encoded)), encoded):
            handle.write(chunk)
            digest.update(chunk)
        for tensor in tensors.values():
            if tensor.numel():
                data = memoryview(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
                handle.write(data)
                digest.update(data)
    _record(path, digest.hexdigest())
    return digest.hexdigest()


def _record(path: Path, digest: str) -> None:
    pending = path.parent / PENDING_DIGESTS
    digests = json.loads(pending.read_text()) if pending.is_file() else {}
    digests[path.name] = digest
    pending.write_text(json.dumps(digests))
