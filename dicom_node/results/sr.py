"""TID 1500 Measurement Report of an engine run (Comprehensive 3D SR or Comprehensive SR).

Content, per PS3.16:

* TID 1411 volumetric group per segment that has measurements: tracking id + UID (the
  SEG segment's), Referenced Segment (with its source images), Finding = segment property
  type, Finding Site, each measurement, Algorithm Name/Version.
* TID 1501 group per classification: Finding (or "<finding> = Absent" when negative) and
  the probability as NUM with UCUM unit "1"; the decision threshold is an algorithm
  parameter.  A TID 1501 group carries study-level measurements.
* A declined run gets a TID 1501 group whose qualitative evaluation is the decline code
  (private scheme ``99AINODE``), plus a plain-words comment with the reason.
* A "Qualitative Evaluations" container (TID 1500 row 12) with TEXT comments: research use
  only, decline reason, engine notes.

Measurement modifiers: Long/Short Axis under Diameter become the concept name (CID 7470
lists them as linear measurements); statistics (CID 7464, e.g. Mean) become Derivation;
anything else becomes Measurement Method.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, SegmentationStorage

from ai_engines import codes as engine_codes
from ai_engines.findings import Classification, Findings, Measurement, Segment
from dicom_node.results.coding import coded_concept
from dicom_node.results.options import SR_SERIES_OFFSET, ResultOptions
from dicom_node.results.source import (
    ascii_text,
    check_source_series,
    copy_patient_study,
    new_uid,
    replace_generated_uids,
    series_description,
    set_file_meta,
    uids_in,
)

# Private coding scheme for node-specific concepts (decline codes).
NODE_SCHEME = "99AINODE"
ENGINE_DECLINED = hd.sr.CodedConcept("DECLINED", NODE_SCHEME, "Engine declined to analyse")
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
ABSENT = hd.sr.CodedConcept("2667000", "SCT", "Absent")
# Findings whose probability is a probability of cancer (DCM 111047); others: DCM 122157.
_CANCER_FINDINGS = frozenset({
    engine_codes.NEOPLASM, engine_codes.NEOPLASM_SECONDARY, engine_codes.BONY_METASTASIS,
    engine_codes.GTV,
})
_LATERALITY = frozenset({engine_codes.LEFT, engine_codes.RIGHT, engine_codes.RIGHT_AND_LEFT})
_AXIS_MODIFIERS = frozenset({engine_codes.LONG_AXIS, engine_codes.SHORT_AXIS})
_STATISTICS = frozenset(
    (c.value, c.scheme_designator) for c in codes.cid7464.concepts.values()
)
_PROCEDURES = {
    "CT": codes.cid100.CTUnspecifiedBodyRegion,
    "MR": codes.cid100.MRIUnspecifiedBodyRegion,
    "NM": codes.cid100.NMUnspecifiedBodyRegion,
    "PT": codes.cid100.PETUnspecifiedBodyRegion,
}


def _algorithm(findings: Findings, parameters: Sequence[str] | None = None,
               ) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=ascii_text(findings.engine.name, 64),
        version=ascii_text(findings.engine.version, 64),
        parameters=list(parameters) if parameters else None,
    )


def _measurement(measurement: Measurement, algorithm: hd.sr.AlgorithmIdentification,
                 ) -> hd.sr.Measurement:
    name, derivation, method = measurement.name, None, None
    modifier = measurement.modifier
    if modifier is not None:
        if modifier in _AXIS_MODIFIERS and measurement.name == engine_codes.DIAMETER:
            name = modifier
        elif (modifier.value, modifier.scheme) in _STATISTICS:
            derivation = coded_concept(modifier)
        else:
            method = coded_concept(modifier)
    return hd.sr.Measurement(
        name=coded_concept(name),
        value=float(measurement.value),
        unit=coded_concept(measurement.unit),
        derivation=derivation,
        method=method,
        algorithm_id=algorithm,
    )


def _segment_numbers(segmentation: Dataset) -> dict[str, Dataset]:
    return {str(item.SegmentLabel): item for item in segmentation.SegmentSequence}


def _referenced_segment(segmentation: Dataset, number: int,
                        source_datasets: Sequence[Dataset]) -> hd.sr.ReferencedSegment:
    frames = [
        i for i, frame in enumerate(segmentation.PerFrameFunctionalGroupsSequence, start=1)
        if frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber == number
    ]
    if frames:
        return hd.sr.ReferencedSegment.from_segmentation(segmentation, segment_number=number)
    # An empty segment has no frames of its own: it was looked for on every source image.
    return hd.sr.ReferencedSegment(
        sop_class_uid=segmentation.SOPClassUID,
        sop_instance_uid=segmentation.SOPInstanceUID,
        segment_number=number,
        source_images=[
            hd.sr.SourceImageForSegmentation(ds.SOPClassUID, ds.SOPInstanceUID)
            for ds in source_datasets
        ],
    )


def _segment_sites(segment: Segment) -> list[hd.sr.FindingSite] | None:
    """Finding Site: the anatomic region, with laterality when the type modifier is one."""
    laterality = (
        coded_concept(segment.property_modifier)
        if segment.property_modifier in _LATERALITY else None
    )
    site = segment.anatomic_region
    if site is None and laterality is not None:
        site = segment.property_type  # e.g. Lung + Left for "Lung_L"
    if site is None:
        return None
    return [hd.sr.FindingSite(coded_concept(site), laterality=laterality)]


def _volumetric_group(
    segment: Segment,
    segment_item: Dataset,
    segmentation: Dataset,
    source_datasets: Sequence[Dataset],
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    number = int(segment_item.SegmentNumber)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=str(segment_item.TrackingUID),
            identifier=str(segment_item.TrackingID),
        ),
        referenced_segment=_referenced_segment(segmentation, number, source_datasets),
        finding_type=coded_concept(segment.property_type),
        finding_category=coded_concept(segment.category),
        finding_sites=_segment_sites(segment),
        algorithm_id=algorithm,
        measurements=[_measurement(m, algorithm) for m in segment.measurements],
    )


def _classification_group(classification: Classification, findings: Findings,
                          ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    algorithm = _algorithm(findings, [f"threshold={classification.threshold:g}"])
    finding = coded_concept(classification.finding)
    evaluation = (
        hd.sr.QualitativeEvaluation(name=codes.DCM.Finding, value=finding)
        if classification.positive
        else hd.sr.QualitativeEvaluation(name=finding, value=ABSENT)
    )
    probability_name = (
        codes.DCM.ProbabilityOfCancer
        if classification.finding in _CANCER_FINDINGS else codes.DCM.Probability
    )
    sites = (
        [hd.sr.FindingSite(coded_concept(classification.finding_site))]
        if classification.finding_site else None
    )
    probability = hd.sr.Measurement(
        name=probability_name,
        value=float(classification.probability),
        unit=coded_concept(engine_codes.UNIT_NONE),
        algorithm_id=algorithm,
        finding_sites=sites,
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=new_uid(),
            identifier=classification.tracking_id or classification.finding.meaning[:64],
        ),
        algorithm_id=algorithm,
        measurements=[probability],
        qualitative_evaluations=[evaluation],
    )


def _plain_group(identifier: str, findings: Findings,
                 measurements: Sequence[Measurement] = (),
                 evaluations: Sequence[hd.sr.QualitativeEvaluation] = (),
                 ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    algorithm = _algorithm(findings)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=new_uid(), identifier=identifier),
        algorithm_id=algorithm,
        measurements=[_measurement(m, algorithm) for m in measurements] or None,
        qualitative_evaluations=list(evaluations) or None,
    )


def report_comments(findings: Findings) -> list[str]:
    """The plain-words statements the report carries as TEXT comments."""
    engine = findings.engine
    comments = []
    if engine.research_use_only:
        comments.append(
            f"AI result from {engine.name} {engine.version}: for research use only, "
            "not for diagnosis. Not verified by a person."
        )
    else:
        comments.append(
            f"AI result from {engine.name} {engine.version}: not verified by a person."
        )
    if findings.decline is not None:
        comments.append(
            f"The engine declined to analyse this series (code {findings.decline.code}): "
            f"{findings.decline.reason}"
        )
    elif not findings.segments and not findings.classifications:
        comments.append("The engine produced no segments and no classifications.")
    comments.extend(findings.notes)
    return comments


def build_measurement_report(
    findings: Findings,
    source_datasets: Sequence[Dataset],
    segmentation: Dataset | None,
    options: ResultOptions,
) -> Dataset:
    """Encode measurements, classifications and any decline as a TID 1500 SR document.

    Parameters
    ----------
    findings
        Engine output (declined runs are allowed: the report then says why).
    source_datasets
        The pseudonymized source slices in the engine's volume order.
    segmentation
        The SEG built from the same findings (its segment numbers and tracking UIDs are
        referenced); ``None`` only when the findings are declined or have no segments.
    options
        Equipment, device observer UID, series numbering and SR storage class.

    Returns
    -------
    pydicom.dataset.Dataset
        Comprehensive 3D SR (or Comprehensive SR), PRELIMINARY, UNVERIFIED, COMPLETE.

    Raises
    ------
    ValueError
        If the device observer UID is missing, the segmentation is missing or does not
        match the findings, or the source series does not match.
    """
    check_source_series(findings, source_datasets)
    if not options.device_observer_uid:
        raise ValueError("options.device_observer_uid must be set to the node's stable UID")
    needs_segmentation = not findings.declined and any(s.measurements for s in findings.segments)
    segment_items: dict[str, Dataset] = {}
    if segmentation is not None:
        if segmentation.get("SOPClassUID") != SegmentationStorage:
            raise ValueError("segmentation is not a DICOM Segmentation")
        if segmentation.FrameOfReferenceUID != source_datasets[0].FrameOfReferenceUID:
            raise ValueError("segmentation is not in the source frame of reference")
        segment_items = _segment_numbers(segmentation)
    elif needs_segmentation:
        raise ValueError("segments with measurements need the segmentation to reference")
    for segment in findings.segments:
        if needs_segmentation and segment.measurements and segment.label not in segment_items:
            raise ValueError(f"segment {segment.label!r} is not in the segmentation")

    groups: list[object] = []
    if findings.decline is not None:
        decline_code = ascii_text(findings.decline.code, 64) or "UNSPECIFIED"
        groups.append(_plain_group(
            "engine-decline", findings,
            evaluations=[hd.sr.QualitativeEvaluation(
                name=ENGINE_DECLINED,
                value=hd.sr.CodedConcept(decline_code, NODE_SCHEME,
                                         ascii_text(findings.decline.reason, 64) or decline_code),
            )],
        ))
    else:
        algorithm = _algorithm(findings)
        for segment in findings.segments:
            if segment.measurements:
                groups.append(_volumetric_group(
                    segment, segment_items[segment.label], segmentation,  # type: ignore[arg-type]
                    source_datasets, algorithm,
                ))
        groups.extend(_classification_group(c, findings) for c in findings.classifications)
        if findings.study_measurements:
            groups.append(_plain_group("study", findings, findings.study_measurements))
    if not groups:
        # TID 1500 needs one group: say which algorithm looked, with no measurement.
        groups.append(_plain_group("no-measurements", findings))

    first = source_datasets[0]
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=options.device_observer_uid,
        name=ascii_text(findings.engine.name, 64),
        manufacturer_name=options.manufacturer,
        model_name=options.manufacturer_model_name,
        serial_number=options.device_serial_number,
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=device,
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=_PROCEDURES.get(str(first.Modality), codes.cid100.ImagingProcedure),
        imaging_measurements=groups,  # type: ignore[arg-type]
    )
    evaluations = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    evaluations.ContentSequence = [
        hd.sr.TextContentItem(
            name=codes.DCM.Comment, value=text,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        for text in report_comments(findings)
    ]
    report[0].ContentSequence.append(evaluations)

    evidence = list(source_datasets) + ([segmentation] if segmentation is not None else [])
    sr_class = (hd.sr.Comprehensive3DSR if options.sr_storage == "comprehensive3d"
                else hd.sr.ComprehensiveSR)
    sr = sr_class(
        evidence=evidence,
        content=report,
        series_instance_uid=new_uid(),
        series_number=options.series_number(SR_SERIES_OFFSET),
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer=options.manufacturer,
        is_complete=True,
        is_final=False,
        is_verified=False,
        institution_name=options.institution_label or None,
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    copy_patient_study(first, sr)
    sr.SeriesDescription = series_description("SR", findings)
    sr.ManufacturerModelName = options.manufacturer_model_name
    sr.SoftwareVersions = options.software_version
    sr.DeviceSerialNumber = options.device_serial_number
    replace_generated_uids(sr, keep=uids_in(evidence))
    set_file_meta(sr)
    return sr
