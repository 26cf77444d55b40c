"""The transfer syntaxes the C-STORE receiver accepts, in the order it prefers them.

pynetdicom, as acceptor, takes for each presentation context the first syntax of *its* list that the sender
proposed, so the order here is the policy:

1. uncompressed, Explicit VR Little Endian first (what Orthanc and dcmtk prefer, and the reader's fast path);
2. lossless compression (JPEG lossless, JPEG-LS, RLE, JPEG 2000 and HTJ2K lossless): a router or PACS that forwards
   MR compressed sends it so, and decoding a slice costs less than refusing the study;
3. lossy compression last: taken only when the sender offers nothing better, since the image then already is what
   it is and a scored study with its transfer syntax on record beats a refusal.

Each compressed syntax is offered only where a pixel decoder for it is installed (pydicom's plugins:
pylibjpeg-libjpeg for the JPEG family and JPEG-LS, pylibjpeg-openjpeg for JPEG 2000 and HTJ2K, pyjpegls and Pillow
as alternatives, pydicom's own RLE decoder): a syntax that could not be decoded is refused at negotiation, where the
sender can fall back, rather than after a C-STORE Success, where the study would be lost.
"""

from __future__ import annotations

from functools import lru_cache

from pydicom import uid

PREFERRED: tuple[str, ...] = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,  # retired, still sent by old equipment; the reader's general path takes it
    uid.JPEGLosslessSV1,
    uid.JPEGLossless,
    uid.JPEGLSLossless,
    uid.RLELossless,
    uid.JPEG2000Lossless,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.JPEGLSNearLossless,
    uid.JPEGExtended12Bit,
    uid.JPEGBaseline8Bit,
    uid.JPEG2000,
    uid.HTJ2K,
)
LOSSY: frozenset[str] = frozenset({uid.JPEGLSNearLossless, uid.JPEGExtended12Bit, uid.JPEGBaseline8Bit,
                                   uid.JPEG2000, uid.HTJ2K})


# Where pydicom has several plugins for a syntax, the one measured fastest here (256 x 256 MR, docs/benchmarks.md):
# pyjpegls decodes JPEG-LS about 3x faster than pylibjpeg-libjpeg, which pydicom would try first.
_FASTEST_PLUGIN: dict[str, str] = {uid.JPEGLSLossless: "pyjpegls", uid.JPEGLSNearLossless: "pyjpegls"}


@lru_cache(maxsize=64)  # asked per compressed file; what is installed does not change while running
def decoding_plugin(syntax: str) -> str:
    """The plugin to decode `syntax` with, or "" to let pydicom choose (also when the preferred one is missing)."""
    from pydicom.pixels import get_decoder

    plugin = _FASTEST_PLUGIN.get(syntax, "")
    try:
        return plugin if plugin and plugin in get_decoder(syntax).available_plugins else ""
    except (NotImplementedError, ValueError, KeyError):
        return ""


@lru_cache(maxsize=64)
def decodable(syntax: str) -> bool:
    """Whether pydicom has a working pixel decoder for `syntax` here (native or an installed plugin)."""
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(syntax).is_available)
    except (NotImplementedError, ValueError, KeyError):
        return False


def accepted() -> tuple[str, ...]:
    """PREFERRED, less the syntaxes this host cannot decode, in order."""
    return tuple(s for s in PREFERRED if decodable(s))


def names(syntaxes: tuple[str, ...]) -> list[str]:
    return [uid.UID(s).name for s in syntaxes]


def keyword(syntax: str) -> str:
    """The metric label for a negotiated syntax: its keyword (JPEGLosslessSV1); all of PREFERRED have one."""
    return uid.UID(syntax).keyword or "other"
