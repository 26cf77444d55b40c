"""One scored series as a TID 1500 Measurement Report (highdicom's MeasurementReport), the SR content viewers such
as OHIF read and IHE AI Results builds on. Codes: appliance/export/sr_codes.py. The tree (rows of PS3.16 TID 1500):

    CONTAINER (126000, DCM, "Imaging Measurement Report")                          TID 1500 row 1
      HAS CONCEPT MOD  Language of Content Item and Descendants = en-US          row 2 (TID 1204)
      HAS OBS CONTEXT  Observer Type = Device, Device Observer UID / Name / Manufacturer / Model Name  row 3
      HAS CONCEPT MOD  (121058, DCM, "Procedure reported") = (241620005, SCT, "Cardiac MRI")            row 4
      CONTAINS  CONTAINER (111028, DCM, "Image Library")                          row 5 (TID 1600)
        CONTAINS CONTAINER (126200, DCM, "Image Library Group")
          HAS ACQ CONTEXT Modality (121139, DCM) = (MR, DCM, "Magnetic Resonance"); Frame of Reference UID
          CONTAINS IMAGE (260753009, SCT, "Source"), one per image of the scored series
      CONTAINS  CONTAINER (126010, DCM, "Imaging Measurements")                   row 6
        CONTAINS CONTAINER (125007, DCM, "Measurement Group"), one per finding    TID 1501
          HAS OBS CONTEXT  Tracking Identifier (112039) = the finding's name; Tracking Unique Identifier (112040)
          CONTAINS         Finding (121071, DCM) = the finding's concept (SNOMED CT or 99SCANSIDE)
          HAS CONCEPT MOD  TID 4019: Algorithm Name / Version = the bundle, Algorithm Parameters = the label-bank
                           version and the backend, Algorithm Family = (123110, DCM, "Artificial Intelligence")
          CONTAINS NUM     similarity score, decision threshold, calibrated probability (UCUM "1")   TID 300
          CONTAINS CODE    the finding's concept = SCT Present / Absent, or Undetermined when the series is
                           not assessable (CID 240)
          CONTAINS CODE    Needs human review = SCT Yes / No; Rare phenotype = Yes where the bank says so
          CONTAINS TEXT    Review reason, one per reason
      CONTAINS  CONTAINER (126011, DCM, "Derived Imaging Measurements")          row 10, when the bundle has
        CONTAINS NUM     Distance from the reference data (UCUM "1")                        reference statistics
      CONTAINS  CONTAINER (C0034375, UMLS, "Qualitative Evaluations")            row 12
        CONTAINS TEXT  (121106, DCM, "Comment") = the research-use statement     row 14
        CONTAINS CODE  Series assessable = SCT Yes / No; TEXT Why not assessable, one per reason   rows 13, 14
        CONTAINS CODE  Needs human review = SCT Yes / No; TEXT Review reason, one per study-level reason

The Image Library lists the images the model tensor was made of (the picked slices' phases the preprocessing used;
every image of the series for a source kept before that was recorded), so a measurement group names no source
images of its own (TID 1501: all images of the document then). Tracking UIDs are derived from the series and the
finding, so a rebuilt document tracks each finding under the same UID, and no UID of the source is written in the
clear beyond the references.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from highdicom.sr import (
    AlgorithmIdentification,
    CodeContentItem,
    CodedConcept,
    ContainerContentItem,
    ImageContentItem,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    NumContentItem,
    ObservationContext,
    QualitativeEvaluation,
    RelationshipTypeValues,
    TextContentItem,
    TrackingIdentifier,
    UIDRefContentItem,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from appliance.export import sr_codes as c
from appliance.handovers import FindingScore, StudyResult

CONTAINS = RelationshipTypeValues.CONTAINS
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
SOURCE = CodedConcept("260753009", "SCT", "Source")


def measurement_report(result: StudyResult, header: Dataset, instances: Sequence[tuple[str, str]],
                       observation: ObservationContext, research_statement: str,
                       include_header: bool = True) -> MeasurementReport:
    """`instances`: the images the Image Library lists (those the model was given, or every image of the series);
    `include_header`: list the kept header's image as well (when the list is the whole series)."""
    scores = result.scores
    algorithm = AlgorithmIdentification(
        name=result.bundle_name, version=result.bundle_version, family=codes.DCM.ArtificialIntelligence,
        parameters=[p for p in (f"label bank {result.bank_version}" if result.bank_version else "",
                                f"backend {result.backend} ({result.precision})") if p])
    groups = [_group(f, result, algorithm) for f in scores.findings]
    report = MeasurementReport(observation_context=observation, procedure_reported=codes.SCT.CardiacMRI,
                               imaging_measurements=groups, title=codes.cid7021.ImagingMeasurementReport)
    root = report[0].ContentSequence
    measurements_at = next(i for i, item in enumerate(root) if item.name == codes.DCM.ImagingMeasurements)
    root.insert(measurements_at, _image_library(header, instances, include_header))
    if scores.ood_distance is not None:
        derived = ContainerContentItem(name=codes.DCM.DerivedImagingMeasurements, relationship_type=CONTAINS)
        derived.ContentSequence = hd.sr.ContentSequence(
            [NumContentItem(c.OOD, float(scores.ood_distance), codes.UCUM.NoUnits, relationship_type=CONTAINS)])
        root.append(derived)
    root.append(_study_evaluations(result, research_statement))
    return report


def tracking_uid(series_uid: str, finding_id: str) -> str:
    return str(generate_uid(entropy_srcs=["scanside-tracking", series_uid, finding_id]))


def _yes_no(flag: bool) -> CodedConcept:
    return codes.SCT.Yes if flag else codes.SCT.No


def _group(f: FindingScore, result: StudyResult, algorithm: AlgorithmIdentification
           ) -> MeasurementsAndQualitativeEvaluations:
    concept = c.finding_concept(f.finding_id, f.name)
    if not result.scores.assessable:
        presence = codes.SCT.Undetermined  # the series cannot show it either way: neither present nor absent
    else:
        presence = codes.SCT.Present if f.positive else codes.SCT.Absent
    evaluations = [QualitativeEvaluation(concept, presence), QualitativeEvaluation(c.NEEDS_REVIEW,
                                                                                   _yes_no(f.needs_review))]
    if f.rare:
        evaluations.append(QualitativeEvaluation(c.RARE, codes.SCT.Yes))
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=tracking_uid(result.info.series_uid, f.finding_id),
                                               identifier=f.name or f.finding_id),
        finding_type=concept,
        algorithm_id=algorithm,
        measurements=[Measurement(name, float(value), codes.UCUM.NoUnits)
                      for name, value in ((c.SCORE, f.score), (c.THRESHOLD, f.threshold),
                                          (c.PROBABILITY, f.probability))],
        qualitative_evaluations=evaluations,
    )
    group[0].ContentSequence.extend(TextContentItem(c.REVIEW_REASON, reason, relationship_type=CONTAINS)
                                    for reason in f.review_reasons)
    return group


def _image_library(header: Dataset, instances: Sequence[tuple[str, str]],
                   include_header: bool = True) -> ContainerContentItem:
    """TID 1600 without per-image descriptors (TID 1601 makes them optional): only one header of the series is
    kept, so only what the series shares is said, on the group."""
    entry = ContainerContentItem(name=codes.DCM.ImageLibraryGroup, relationship_type=CONTAINS)
    items: list = []
    modality = c.modality_concept(str(header.get("Modality", "")))
    if modality is not None:
        items.append(CodeContentItem(codes.DCM.Modality, modality,
                                     relationship_type=RelationshipTypeValues.HAS_ACQ_CONTEXT))
    if header.get("FrameOfReferenceUID"):  # one per series in DICOM's model: shared by every image listed
        items.append(UIDRefContentItem(codes.DCM.FrameOfReferenceUID, str(header.FrameOfReferenceUID),
                                       relationship_type=RelationshipTypeValues.HAS_ACQ_CONTEXT))
    items += [ImageContentItem(SOURCE, sop_class, sop_instance, relationship_type=CONTAINS)
              for sop_class, sop_instance in (_with_header(header, instances) if include_header
                                              else list(dict.fromkeys(instances)))]
    entry.ContentSequence = hd.sr.ContentSequence(items)
    library = ContainerContentItem(name=codes.DCM.ImageLibrary, relationship_type=CONTAINS)
    library.ContentSequence = hd.sr.ContentSequence([entry])
    return library


def _with_header(header: Dataset, instances: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every image once, the kept header's too (a source captured without its instance list still has one)."""
    refs = list(dict.fromkeys(instances))
    own = (str(header.SOPClassUID), str(header.SOPInstanceUID))
    return refs if own in refs else [own, *refs]


def _study_evaluations(result: StudyResult, research_statement: str) -> ContainerContentItem:
    scores = result.scores
    items: list = [
        TextContentItem(codes.DCM.Comment, research_statement, relationship_type=CONTAINS),
        CodeContentItem(c.ASSESSABLE, _yes_no(scores.assessable), relationship_type=CONTAINS),
    ]
    items += [TextContentItem(c.QUALITY_REASON, reason, relationship_type=CONTAINS)
              for reason in scores.quality_reasons]
    items.append(CodeContentItem(c.NEEDS_REVIEW, _yes_no(scores.needs_review), relationship_type=CONTAINS))
    items += [TextContentItem(c.REVIEW_REASON, reason, relationship_type=CONTAINS) for reason in scores.review_reasons]
    box = ContainerContentItem(name=QUALITATIVE_EVALUATIONS, relationship_type=CONTAINS)
    box.ContentSequence = hd.sr.ContentSequence(items)
    return box
