"""Writing files so that a failure leaves nothing behind."""
import contextlib
import hashlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_output(destination):
    """Yield a temporary path beside ``destination``; move it into place on success.

    The temporary file lives in the destination's folder (so the final rename is
    atomic) under a hidden name. If the block raises, the temporary file is
    removed and ``destination`` is left as it was.
    """
    destination = Path(destination)
    folder = destination.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {str(folder)!r} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=folder)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it private; give it a normal file's mode
        os.replace(tmp, destination)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_digest(path, algorithm="sha256", chunk=1 << 20):
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
