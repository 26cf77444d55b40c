"""Ground truth from the hospital's own final reports: HL7 v2 ORU^R01 over MLLP (`mllp`, `oru`), and labels per
finding read from the report text with negation handled (`extract`). Standalone so far: nothing here stores,
matches or configures; the caller hands `MllpListener` a sink for each `FinalReport`."""
