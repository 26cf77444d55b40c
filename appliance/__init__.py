"""ScanSide: a scanner-side zero-shot inference appliance for cine cardiac MRI.

Research software. The bundled model is a synthetic reference model trained on synthetic phantoms and generated
report text: not for clinical use.
"""

__version__ = "0.1.0"

# What ScanSide's DICOM AEs announce in every association (docs/conformance.md): a UUID-derived UID (ITU-T X.667,
# root 2.25), fixed for the product, and the version name.
IMPLEMENTATION_CLASS_UID = "2.25.121039490359702827448292588823245309900"
IMPLEMENTATION_VERSION_NAME = f"SCANSIDE_{__version__}"[:16]


def identify(ae):  # a pynetdicom AE (not imported here: this package's root stays light)
    """`ae` announcing ScanSide's implementation class UID and version name; every AE of the appliance is made so."""
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    return ae

RESEARCH_NOTICE = "Research software, synthetic reference model: not for clinical or diagnostic use."
