"""A checksum trailer on HDF5 files we write, checked before HDF5 reads a byte of them.

Why before: fuzzing showed that libhdf5 can crash the whole process (a segmentation
fault while reading an attribute) on a file with one flipped byte, so a damaged
checkpoint must be recognised without handing it to HDF5.

``trailer(image, array_extents(f))`` gives what atomic_h5_write appends to the finished
file's bytes::

    JSON {"size": N, "sha256": hex of bytes 0..N, "arrays": [[name, offset, length, sha256], ...]}
    8 bytes: the JSON's length (little-endian)
    16 bytes: MAGIC

HDF5 ignores bytes past its end-of-file address, so the file stays an ordinary HDF5
file. ``arrays`` gives where each dataset's data lies in the file (those stored
contiguously), so a mismatch can be named: "array /model/fc1.kernel", or "HDF5's own
structures or attributes" when no array's bytes changed. ``check_trailer(path)``
raises WeightsError naming the file and the damage, returns False for a file without
a trailer; such a file is refused too when its root attribute says it was written with
one (``mark_checksummed``: a damaged trailer, or a file cut short), and otherwise read
unchecked (written before trailers existed, or by another program).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

import h5py

from minicnn.io.errors import WeightsError

MAGIC = b"minicnn-sha256v1"
MARK = "minicnn_checksum"              # root attribute: "this file ends in a trailer"
_BLOCK = 1 << 20


def _sha256(f, offset: int, length: int) -> str:
    f.seek(offset)
    h = hashlib.sha256()
    while length > 0:
        chunk = f.read(min(_BLOCK, length))
        if not chunk:
            break
        h.update(chunk)
        length -= len(chunk)
    return h.hexdigest()


def mark_checksummed(f: h5py.File) -> None:
    """Record in ``f`` (before it is finished) that its bytes will carry a trailer."""
    f.attrs[MARK] = "sha256-trailer-v1"


def array_extents(f: h5py.File) -> list[tuple[str, int, int]]:
    """(name, byte offset, byte length) of every contiguously stored dataset of a finished file."""
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            offset = obj.id.get_offset()
            if offset is not None and obj.id.get_storage_size():
                found.append((f"/{name}", int(offset), int(obj.id.get_storage_size())))
    f.visititems(visit)
    return found


def trailer(image: bytes, extents: list[tuple[str, int, int]]) -> bytes:
    """The checksum trailer of the HDF5 file whose bytes are ``image``."""
    view = memoryview(image)
    payload = {"size": len(image), "sha256": hashlib.sha256(view).hexdigest(),
               "arrays": [[name, off, n, hashlib.sha256(view[off:off + n]).hexdigest()]
                          for name, off, n in extents]}
    text = json.dumps(payload).encode()
    return text + struct.pack("<Q", len(text)) + MAGIC


def _read_trailer(f, total: int) -> dict | None:
    if total < len(MAGIC) + 8:
        return None
    f.seek(total - len(MAGIC) - 8)
    tail = f.read(len(MAGIC) + 8)
    if tail[8:] != MAGIC:
        return None
    (length,) = struct.unpack("<Q", tail[:8])
    start = total - len(MAGIC) - 8 - length
    if start < 0:
        raise ValueError("the trailer's length points before the start of the file")
    f.seek(start)
    payload = json.loads(f.read(length))
    if not isinstance(payload, dict) or payload.get("size") != start:
        raise ValueError("the trailer does not describe this file's size")
    return payload


def check_trailer(path: str) -> bool:
    """Verify ``path`` against its trailer; WeightsError naming the damage. False if it has none."""
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        try:
            payload = _read_trailer(f, total)
        except (ValueError, UnicodeDecodeError, struct.error) as err:
            raise WeightsError(f"{path}: corrupt file: its checksum trailer is damaged ({err}); use an earlier "
                               f"checkpoint", path=path) from err
        if payload is None:
            return False
        if _sha256(f, 0, payload["size"]) == payload["sha256"]:
            return True
        damaged = [name for name, off, n, digest in payload.get("arrays", []) if _sha256(f, off, n) != digest]
    what = f"array {damaged[0]}" if damaged else "HDF5's own structures or attributes (settings, history)"
    more = f" (and {len(damaged) - 1} more arrays)" if len(damaged) > 1 else ""
    raise WeightsError(f"{path}: corrupt file: {what}{more} fails its checksum: the file changed after it was "
                       f"written (a disk or copy error); use an earlier checkpoint", path=path)
