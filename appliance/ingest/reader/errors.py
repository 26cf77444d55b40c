"""What the reader refuses and why: the closed set of rejection reasons, its two errors, its limits and the
transfer syntaxes it names."""

from __future__ import annotations

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_LE = "1.2.840.10008.1.2.1.99"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
FAST_SYNTAXES = frozenset({IMPLICIT_LE, EXPLICIT_LE})

# No MR image has tens of megabytes of header; a file that does is damaged or hostile, and reading it would cost
# the appliance memory and time.
MAX_HEADER_BYTES = 64 << 20
# The largest instance taken, as stored or once inflated or decoded ([ingest] max_instance_mb). A classic MR image
# is well under 1 MB; an enhanced MR cine of 300 frames of 256 x 256 is about 40 MB.
DEFAULT_MAX_INSTANCE_BYTES = 128 << 20
_INFLATE_IN = 64 << 10  # compressed bytes read per step when a deflated file is measured
_INFLATE_OUT = 1 << 20  # most bytes inflated per step: what measuring a bomb costs in memory

# Every way a file can be refused: a closed set, used as the quarantine folder and the metric label.
REJECT_REASONS = frozenset({
    "not_a_file", "not_dicom", "unreadable", "corrupt", "truncated", "too_large", "not_mr", "missing_identity",
    "missing_geometry", "no_pixel_data", "unsupported_pixels", "unsupported_transfer_syntax",
    "sop_class_mismatch",  # received over C-STORE as one SOP class, the dataset says another
    "late",  # a readable image of a series already closed that it did not have (the ingestor's, not the reader's)
})


class IncompleteFile(Exception):
    """The file ends before its data does: it may still be being written. Retry once it settles."""


class RejectedFile(Exception):
    """The file can never become a usable instance. `reason` is one of REJECT_REASONS; `detail` says what is wrong
    in the reader's own words (attribute names, sizes), never quoting a value from the file: it lands in the
    quarantine note, and text values can be names or IDs."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REJECT_REASONS:
            raise ValueError(f"undeclared rejection reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
