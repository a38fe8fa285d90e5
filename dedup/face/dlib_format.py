"""Reading dlib's binary serialisation format (``dlib/serialize.h``).

Only what a trained network file needs: integers, bools, strings, scalar floats and
tensors. Every read checks that the bytes are there, so a truncated or foreign file gives a
clear :class:`~dedup.errors.FaceModelError` instead of garbage weights.
"""

from __future__ import annotations

import math

import numpy as np

from dedup.errors import FaceModelError

# float_details uses these exponents for the special values.
_EXP_INF, _EXP_NINF, _EXP_NAN = 32000, 32001, 32002


class DlibReader:
    """A cursor over the bytes of one dlib-serialised file."""

    def __init__(self, data: bytes, name: str = "model file") -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.name = name

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise FaceModelError(f"{self.name}: unexpected end of file at byte {self.pos} (wanted {n} more bytes)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def at_end(self) -> bool:
        """True when every byte has been read."""
        return self.pos == len(self.data)

    def integer(self) -> int:
        """A control byte (bit 7: negative; low 4 bits: byte count) then little-endian magnitude."""
        control = self._take(1)[0]
        count = control & 0x0F
        if count > 8 or control & 0x70:
            raise FaceModelError(f"{self.name}: bad integer control byte {control:#04x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(count), "little")
        return -value if control & 0x80 else value

    def boolean(self) -> bool:
        """An ASCII '0' or '1'."""
        byte = bytes(self._take(1))
        if byte not in (b"0", b"1"):
            raise FaceModelError(f"{self.name}: expected a bool at byte {self.pos - 1}, got {byte!r}")
        return byte == b"1"

    def string(self) -> str:
        """An integer length, then that many bytes."""
        length = self.integer()
        if length < 0 or length > 1 << 20:
            raise FaceModelError(f"{self.name}: implausible string length {length} at byte {self.pos}")
        return bytes(self._take(length)).decode("latin-1")

    def expect_string(self, *allowed: str) -> str:
        """A string that must be one of ``allowed`` (a layer or format tag)."""
        start = self.pos
        text = self.string()
        if text not in allowed:
            raise FaceModelError(f"{self.name}: expected {' or '.join(map(repr, allowed))} at byte {start}, found {text!r}")
        return text

    def scalar(self) -> float:
        """A float or double as float_details writes it: mantissa integer, then exponent integer."""
        mantissa = self.integer()
        exponent = self.integer()
        if exponent == _EXP_INF:
            return math.inf
        if exponent == _EXP_NINF:
            return -math.inf
        if exponent == _EXP_NAN:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def tensor(self) -> np.ndarray:
        """A resizable tensor: version 2, shape (n, k, nr, nc), then raw little-endian float32."""
        version = self.integer()
        if version != 2:
            raise FaceModelError(f"{self.name}: unsupported tensor version {version} at byte {self.pos}")
        shape = tuple(self.integer() for _ in range(4))
        if any(d < 0 for d in shape):
            raise FaceModelError(f"{self.name}: negative tensor shape {shape}")
        count = math.prod(shape)
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias_shape(self) -> tuple[int, int, int, int]:
        """An alias_tensor: version 1 and a shape (its data lives in the layer's params)."""
        version = self.integer()
        if version != 1:
            raise FaceModelError(f"{self.name}: unsupported alias_tensor version {version} at byte {self.pos}")
        n, k, nr, nc = (self.integer() for _ in range(4))
        return n, k, nr, nc
