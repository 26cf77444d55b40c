"""One scored series as a Comprehensive SR content tree of ScanSide's own (no template), the form exports had
before TID 1500 and still the choice of `[export] sr_template = "comprehensive"`. Codes: appliance/export/sr_codes.py.

    CONTAINER  [99SCANSIDE report] "Research zero-shot cine CMR screen - not for diagnostic use"
      HAS OBS CONTEXT  device observer: the appliance (TID 1002/1004)
      CONTAINS TEXT     [DCM 121106 Comment]  the research-use statement, in words
      CONTAINS TEXT     [DCM 111001 Algorithm Name] / [DCM 111003 Algorithm Version]  the model bundle
      CONTAINS TEXT     [99SCANSIDE label-bank-version]  the label-bank version that scored it (prompts, thresholds)
      CONTAINS TEXT     [99SCANSIDE backend]  inference backend, version and precision
      CONTAINS UIDREF   [DCM 112002 Series Instance UID]  the scored source series
      CONTAINS CODE     [99SCANSIDE assessable]  SCT Yes / No: No when the series is not a usable cine short-axis
                        stack (then no finding is present), with one TEXT [99SCANSIDE quality-reason] per reason
      CONTAINS CODE     [99SCANSIDE needs-review]  SCT Yes / No, with one TEXT per study-level reason
      CONTAINS NUM      [99SCANSIDE ood-distance]  when the bundle has reference statistics
      CONTAINS CONTAINER [99SCANSIDE finding-result], one per finding:
          CODE [DCM 121071 Finding] = the finding (99SCANSIDE code = finding id, meaning = its name)
          CODE [99SCANSIDE decision] = SCT Present / Absent
          NUM  similarity score, threshold, calibrated probability (UCUM "1": no units)
          TEXT [99SCANSIDE review-reason], one per reason
"""

from __future__ import annotations

import highdicom as hd
from highdicom.sr import (
    CodeContentItem,
    CodedConcept,
    ContainerContentItem,
    NumContentItem,
    ObservationContext,
    RelationshipTypeValues,
    TextContentItem,
    UIDRefContentItem,
)
from pydicom.sr.codedict import codes

from appliance.export import sr_codes as c
from appliance.handovers import StudyResult


def content(result: StudyResult, observation: ObservationContext, research_statement: str) -> ContainerContentItem:
    contains = RelationshipTypeValues.CONTAINS
    scores = result.scores
    root = ContainerContentItem(name=c.TITLE)
    items: list = list(observation)
    items += [
        TextContentItem(codes.DCM.Comment, research_statement, relationship_type=contains),
        TextContentItem(codes.DCM.AlgorithmName, result.bundle_name, relationship_type=contains),
        TextContentItem(codes.DCM.AlgorithmVersion, result.bundle_version, relationship_type=contains),
    ]
    if result.bank_version:
        items.append(TextContentItem(c.BANK_VERSION, result.bank_version, relationship_type=contains))
    items += [
        TextContentItem(c.BACKEND, f"{result.backend} ({result.precision})", relationship_type=contains),
        UIDRefContentItem(codes.DCM.SeriesInstanceUID, result.info.series_uid, relationship_type=contains),
        CodeContentItem(c.ASSESSABLE, codes.SCT.Yes if scores.assessable else codes.SCT.No,
                        relationship_type=contains),
    ]
    items += [TextContentItem(c.QUALITY_REASON, reason, relationship_type=contains)
              for reason in scores.quality_reasons]
    items.append(CodeContentItem(c.NEEDS_REVIEW, codes.SCT.Yes if scores.needs_review else codes.SCT.No,
                                 relationship_type=contains))
    items += [TextContentItem(c.REVIEW_REASON, reason, relationship_type=contains) for reason in scores.review_reasons]
    if scores.ood_distance is not None:
        items.append(NumContentItem(c.OOD, float(scores.ood_distance), codes.UCUM.NoUnits, relationship_type=contains))
    for f in scores.findings:
        box = ContainerContentItem(name=c.FINDING_RESULT, relationship_type=contains)
        parts = [
            CodeContentItem(codes.DCM.Finding, CodedConcept(f.finding_id, c.SCHEME, c.lo(f.name) or c.lo(f.finding_id)),
                            relationship_type=contains),
            CodeContentItem(c.DECISION, codes.SCT.Present if f.positive else codes.SCT.Absent,
                            relationship_type=contains),
            NumContentItem(c.SCORE, float(f.score), codes.UCUM.NoUnits, relationship_type=contains),
            NumContentItem(c.THRESHOLD, float(f.threshold), codes.UCUM.NoUnits, relationship_type=contains),
            NumContentItem(c.PROBABILITY, float(f.probability), codes.UCUM.NoUnits, relationship_type=contains),
        ]
        if f.rare:
            parts.append(CodeContentItem(c.RARE, codes.SCT.Yes, relationship_type=contains))
        parts += [TextContentItem(c.REVIEW_REASON, r, relationship_type=contains) for r in f.review_reasons]
        box.ContentSequence = hd.sr.ContentSequence(parts)
        items.append(box)
    root.ContentSequence = hd.sr.ContentSequence(items)
    return root
