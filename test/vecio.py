"""test/vecio.py: write the reference-vector files that the C tests read (test/vectors.h).

Format (little-endian): magic b"VEC1", int32 count, then per array:
  int32 name_len, name bytes (utf-8), int32 ndim, int32 dims[ndim], float32 data[prod(dims)].
Integers are stored as float32 too (exact below 2^24), which keeps the reader trivial.
"""
import struct


def write_vectors(path, arrays):
    """arrays: list of (name, tensor_or_array_or_list). Writes them in order."""
    import numpy as np
    with open(path, "wb") as f:
        f.write(b"VEC1")
        f.write(struct.pack("<i", len(arrays)))
        for name, a in arrays:
            if hasattr(a, "detach"):
                a = a.detach().cpu().float().numpy()
            a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
            nb = name.encode()
            f.write(struct.pack("<i", len(nb)))
            f.write(nb)
            f.write(struct.pack("<i", a.ndim))
            for d in a.shape:
                f.write(struct.pack("<i", d))
            f.write(a.astype("<f4").tobytes())
