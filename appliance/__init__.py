"""ScanSide: a scanner-side zero-shot inference appliance for cine cardiac MRI.

Research software. The bundled model is a synthetic reference model trained on synthetic phantoms and generated
report text: not for clinical use.
"""

__version__ = "0.1.0"

RESEARCH_NOTICE = "Research software, synthetic reference model: not for clinical or diagnostic use."
