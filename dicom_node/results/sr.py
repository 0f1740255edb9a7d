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

from collections.abc import Mapping, Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, SegmentationStorage

from ai_engines import codes as engine_codes
from ai_engines.findings import Classification, Findings, Measurement, RegionMeasurements, Segment
from ai_engines.volume import SliceReference
from dicom_node.results.coding import coded_concept
from dicom_node.results.options import SR_SERIES_OFFSET, ResultOptions
from dicom_node.results.source import (
    SourceGrid,
    ascii_text,
    check_source_series,
    copy_patient_study,
    new_uid,
    replace_generated_uids,
    series_description,
    set_file_meta,
    source_grid,
    uids_in,
)

# Private coding scheme for node-specific concepts (decline codes).
NODE_SCHEME = "99AINODE"
ENGINE_DECLINED = hd.sr.CodedConcept("DECLINED", NODE_SCHEME, "Engine declined to analyse")
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
ABSENT = hd.sr.CodedConcept("2667000", "SCT", "Absent")
# A received RT Structure Set ROI has no TID 1411 reference row (Referenced Segment is for
# SEG only): its group references the structure set (COMPOSITE) and names the ROI number.
REFERENCED_STRUCTURE_SET = hd.sr.CodedConcept("RTSTRUCT_REF", NODE_SCHEME,
                                              "Referenced RT Structure Set")
REFERENCED_ROI_NUMBER = hd.sr.CodedConcept("ROI_NUMBER", NODE_SCHEME, "Referenced ROI Number")
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


def _probability_name(finding: object) -> hd.sr.CodedConcept:
    """DCM 111047 "Probability of cancer" for neoplasm-type findings, else DCM 122157."""
    return (codes.DCM.ProbabilityOfCancer if finding in _CANCER_FINDINGS
            else codes.DCM.Probability)


def _source_image_items(grid: SourceGrid, mask: np.ndarray | None = None,
                        ) -> list[hd.sr.SourceImageForSegmentation]:
    """The source images (and frames) a mask lies on; every slice for ``None`` or empty."""
    slices = list(range(grid.shape[0]))
    if mask is not None and mask.any():
        slices = [k for k in slices if mask[k].any()]
    frames: dict[str, tuple[Dataset, list[int]]] = {}
    for k in slices:
        item = grid.slices[k]
        entry = frames.setdefault(str(item.dataset.SOPInstanceUID), (item.dataset, []))
        if item.frame_number is not None:
            entry[1].append(item.frame_number)
    return [
        hd.sr.SourceImageForSegmentation(str(ds.SOPClassUID), uid, sorted(numbers) or None)
        for uid, (ds, numbers) in frames.items()
    ]


def _referenced_segment(segmentation: Dataset, number: int, grid: SourceGrid,
                        ) -> hd.sr.ReferencedSegment:
    frames = _seg_frames(segmentation, number)
    per_frame = segmentation.PerFrameFunctionalGroupsSequence
    if frames and "SegmentIdentificationSequence" in per_frame[0]:
        return hd.sr.ReferencedSegment.from_segmentation(segmentation, segment_number=number)
    if frames:
        # One segment: highdicom 0.28's from_segmentation reads only per-frame identification;
        # the same references, taken from the frames' derivation images.
        images: dict[str, hd.sr.SourceImageForSegmentation] = {}
        for i in frames:
            for derivation in per_frame[i - 1].get("DerivationImageSequence", []):
                for source in derivation.get("SourceImageSequence", []):
                    frame = source.get("ReferencedFrameNumber")
                    images.setdefault(str(source.ReferencedSOPInstanceUID),
                                      hd.sr.SourceImageForSegmentation(
                                          str(source.ReferencedSOPClassUID),
                                          str(source.ReferencedSOPInstanceUID),
                                          [int(frame)] if frame is not None else None))
        return hd.sr.ReferencedSegment(
            sop_class_uid=segmentation.SOPClassUID,
            sop_instance_uid=segmentation.SOPInstanceUID,
            segment_number=number,
            source_images=list(images.values()),
        )
    # An empty segment has no frames of its own: it was looked for on every source image.
    return hd.sr.ReferencedSegment(
        sop_class_uid=segmentation.SOPClassUID,
        sop_instance_uid=segmentation.SOPInstanceUID,
        segment_number=number,
        source_images=_source_image_items(grid),
    )


def _seg_frames(segmentation: Dataset, number: int) -> list[int]:
    """The SEG's 1-based frames that hold segment ``number``."""
    # With one segment, highdicom puts the identification in the shared groups.
    shared = segmentation.SharedFunctionalGroupsSequence[0].get("SegmentIdentificationSequence")
    frames = []
    for i, frame in enumerate(segmentation.PerFrameFunctionalGroupsSequence, start=1):
        identification = frame.get("SegmentIdentificationSequence") or shared
        if identification and identification[0].ReferencedSegmentNumber == number:
            frames.append(i)
    return frames


def _seg_source_frame(segmentation: Dataset) -> tuple[str, int | None]:
    """The (instance, frame) a one-view SEG of a planar source lies on."""
    item = segmentation.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    source = item.SourceImageSequence[0]
    frame = source.get("ReferencedFrameNumber")
    return str(source.ReferencedSOPInstanceUID), (int(frame) if frame is not None else None)


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


def _segment_evaluations(segment: Segment, algorithm: hd.sr.AlgorithmIdentification,
                         ) -> list[hd.sr.Measurement]:
    measurements = [_measurement(m, algorithm) for m in segment.measurements]
    if segment.probability is not None:
        # Per-lesion confidence: a NUM like a classification's, ratio unit "1".
        measurements.append(hd.sr.Measurement(
            name=_probability_name(segment.property_type),
            value=float(segment.probability),
            unit=coded_concept(engine_codes.UNIT_NONE),
            algorithm_id=algorithm,
        ))
    return measurements


def _volumetric_group(
    segment: Segment,
    number: int,
    segmentation: Dataset,
    grid: SourceGrid,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    segment_item = segmentation.SegmentSequence[number - 1]
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=str(segment_item.TrackingUID),
            identifier=str(segment_item.TrackingID),
        ),
        referenced_segment=_referenced_segment(segmentation, number, grid),
        finding_type=coded_concept(segment.property_type),
        finding_category=coded_concept(segment.category),
        finding_sites=_segment_sites(segment),
        algorithm_id=algorithm,
        measurements=_segment_evaluations(segment, algorithm),
    )


def _planar_group(
    segment: Segment,
    number: int,
    segmentation: Dataset,
    grid: SourceGrid,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410 for a segment on a planar view: Referenced Segmentation Frame of the
    one-view SEG, with the NM frame it was drawn on."""
    segment_item = segmentation.SegmentSequence[number - 1]
    source_uid, source_frame = _seg_source_frame(segmentation)
    group = _planar_group_content(segment, number, segmentation, segment_item, source_uid,
                                  source_frame, grid, algorithm)
    # PS3.3 C.10.4: an image reference names frames or segments, not both; the one-view SEG
    # holds one frame per segment, so the segment number alone identifies it.
    for item in group[0].ContentSequence:
        if item.ValueType == "IMAGE" and item.ReferencedSOPSequence[0].get(
                "ReferencedSOPInstanceUID") == segmentation.SOPInstanceUID:
            del item.ReferencedSOPSequence[0].ReferencedFrameNumber
    return group


def _planar_group_content(
    segment: Segment,
    number: int,
    segmentation: Dataset,
    segment_item: Dataset,
    source_uid: str,
    source_frame: int | None,
    grid: SourceGrid,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    source_class = next(str(ds.SOPClassUID) for ds in grid.instances
                        if str(ds.SOPInstanceUID) == source_uid)
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=str(segment_item.TrackingUID),
            identifier=str(segment_item.TrackingID),
        ),
        referenced_segment=hd.sr.ReferencedSegmentationFrame(
            sop_class_uid=str(segmentation.SOPClassUID),
            sop_instance_uid=str(segmentation.SOPInstanceUID),
            frame_number=(_seg_frames(segmentation, number) or [1])[0],
            segment_number=number,
            source_image=hd.sr.SourceImageForSegmentation(
                source_class, source_uid, [source_frame] if source_frame else None),
        ),
        finding_type=coded_concept(segment.property_type),
        finding_category=coded_concept(segment.category),
        finding_sites=_segment_sites(segment),
        algorithm_id=algorithm,
        measurements=_segment_evaluations(segment, algorithm),
    )


def _image_reference(reference: SliceReference, grids: Mapping[str, SourceGrid],
                     ) -> hd.sr.SourceImageForMeasurementGroup:
    """TID 1501 "Source" image of an image-level finding; it must be a known source image."""
    for grid in grids.values():
        for ds in grid.instances:
            if str(ds.SOPInstanceUID) != reference.sop_instance_uid:
                continue
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            if reference.frame_number is not None and not 1 <= reference.frame_number <= frames:
                raise ValueError("a classification names a frame its source image lacks")
            return hd.sr.SourceImageForMeasurementGroup(
                str(ds.SOPClassUID), reference.sop_instance_uid,
                [reference.frame_number] if reference.frame_number is not None and frames > 1
                else None,
            )
    raise ValueError("a classification references an image that is not among the sources")


def _classification_group(classification: Classification, findings: Findings,
                          grids: Mapping[str, SourceGrid] | None = None,
                          ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    algorithm = _algorithm(findings, [f"threshold={classification.threshold:g}"])
    finding = coded_concept(classification.finding)
    evaluation = (
        hd.sr.QualitativeEvaluation(name=codes.DCM.Finding, value=finding)
        if classification.positive
        else hd.sr.QualitativeEvaluation(name=finding, value=ABSENT)
    )
    sites = (
        [hd.sr.FindingSite(coded_concept(classification.finding_site))]
        if classification.finding_site else None
    )
    probability = hd.sr.Measurement(
        name=_probability_name(classification.finding),
        value=float(classification.probability),
        unit=coded_concept(engine_codes.UNIT_NONE),
        algorithm_id=algorithm,
        finding_sites=sites,
    )
    sources = (
        [_image_reference(classification.source, grids or {})]
        if classification.source is not None else None
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=new_uid(),
            identifier=classification.tracking_id or classification.finding.meaning[:64],
        ),
        algorithm_id=algorithm,
        measurements=[probability],
        qualitative_evaluations=[evaluation],
        source_images=sources,
    )


def _region_group(region: RegionMeasurements, findings: Findings,
                  grids: Mapping[str, SourceGrid]) -> object:
    """Measurements of a received region, referencing the received object (not a copy).

    A SEG segment: TID 1411 with Referenced Segment (the received SEG and segment number).
    An RTSTRUCT ROI: TID 1501 with the images the ROI lies on as "Source", a COMPOSITE
    reference to the structure set and the ROI number.
    """
    contours = region.region
    algorithm = _algorithm(findings)
    identifier = hd.sr.TrackingIdentifier(
        uid=new_uid(), identifier=ascii_text(region.tracking_id or contours.name, 64) or "region")
    measurements = [_measurement(m, algorithm) for m in region.measurements] or None
    grid = grids.get(contours.series_uid)
    if contours.source_sop_class_uid == SegmentationStorage and contours.source_number:
        images = _source_image_items(grid, contours.mask) if grid is not None else None
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=identifier,
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=SegmentationStorage,
                sop_instance_uid=contours.source_sop_instance_uid,
                segment_number=int(contours.source_number),
                source_images=images,
                source_series=(None if images else
                               hd.sr.SourceSeriesForSegmentation(contours.series_uid)),
            ),
            algorithm_id=algorithm,
            measurements=measurements,
        )
    sources = None
    if grid is not None:
        sources = [hd.sr.SourceImageForMeasurementGroup(
            i.referenced_sop_class_uid, i.referenced_sop_instance_uid,
            i.referenced_frame_numbers) for i in _source_image_items(grid, contours.mask)]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=identifier,
        algorithm_id=algorithm,
        measurements=measurements,
        source_images=sources,
    )
    if contours.source_sop_class_uid == RTStructureSetStorage and contours.source_sop_instance_uid:
        group[0].ContentSequence.append(hd.sr.CompositeContentItem(
            name=REFERENCED_STRUCTURE_SET,
            referenced_sop_class_uid=RTStructureSetStorage,
            referenced_sop_instance_uid=contours.source_sop_instance_uid,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ))
        if contours.source_number is not None:
            group[0].ContentSequence.append(hd.sr.TextContentItem(
                name=REFERENCED_ROI_NUMBER, value=str(int(contours.source_number)),
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            ))
    return group


def _received_object(region: RegionMeasurements, study_uid: str) -> Dataset | None:
    """Evidence entry for the received RTSTRUCT/SEG a region came from (identifiers only)."""
    contours = region.region
    if not (contours.source_sop_instance_uid and contours.source_sop_class_uid
            and contours.source_series_uid):
        return None
    stub = Dataset()
    stub.StudyInstanceUID = study_uid
    stub.SeriesInstanceUID = contours.source_series_uid
    stub.SOPClassUID = contours.source_sop_class_uid
    stub.SOPInstanceUID = contours.source_sop_instance_uid
    return stub


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
    elif not (findings.segments or findings.classifications or findings.maps
              or findings.region_measurements):
        comments.append("The engine produced no segments and no classifications.")
    comments.extend(findings.notes)
    return comments


def build_measurement_report(
    findings: Findings,
    source_datasets: Sequence[Dataset] | SourceGrid,
    segmentation: Dataset | Sequence[Dataset] | None,
    options: ResultOptions,
    *,
    sources: Mapping[str, Sequence[Dataset] | SourceGrid] | None = None,
) -> Dataset:
    """Encode measurements, classifications and any decline as a TID 1500 SR document.

    Parameters
    ----------
    findings
        Engine output (declined runs are allowed: the report then says why).
    source_datasets
        The pseudonymized source series of ``findings.source_series_uid`` (slices in the
        engine's volume order, one multi-frame instance, or a grid).
    segmentation
        The SEG(s) built from the same findings (their segment numbers and tracking UIDs
        are referenced); ``None`` only when the findings are declined or no segment needs a
        measurement group.
    options
        Equipment, device observer UID, series numbering and SR storage class.
    sources
        Further source series by Series Instance UID, for segments, classifications and
        received regions on other series of the study (e.g. every decoded series: only the
        ones a group references become evidence).

    Returns
    -------
    pydicom.dataset.Dataset
        Comprehensive 3D SR (or Comprehensive SR), PRELIMINARY, UNVERIFIED, COMPLETE.

    Raises
    ------
    ValueError
        If the device observer UID is missing, the segmentation is missing or does not
        match the findings, a reference names an unknown image, or the source series does
        not match.
    """
    primary = check_source_series(findings, source_datasets if isinstance(
        source_datasets, SourceGrid) else source_grid(source_datasets))
    grids: dict[str, SourceGrid] = {primary.series_uid: primary}
    for uid, datasets in (sources or {}).items():
        if uid not in grids:
            grids[uid] = check_source_series(findings, datasets if isinstance(
                datasets, SourceGrid) else source_grid(datasets), uid)
            if grids[uid].first.StudyInstanceUID != primary.first.StudyInstanceUID:
                raise ValueError("a source series is not in the engine's study")
    if not options.device_observer_uid:
        raise ValueError("options.device_observer_uid must be set to the node's stable UID")
    segmentations = ([] if segmentation is None else
                     [segmentation] if isinstance(segmentation, Dataset) else list(segmentation))
    for seg in segmentations:
        if seg.get("SOPClassUID") != SegmentationStorage:
            raise ValueError("segmentation is not a DICOM Segmentation")
    reported = [s for s in findings.segments if s.measurements or s.probability is not None]
    # label -> (segmentation, segment number) for each segment that gets a group.
    placed: dict[str, tuple[Dataset, int, SourceGrid]] = {}
    if not findings.declined:
        for segment in reported:
            series_uid = segment.source_series_uid or findings.source_series_uid
            grid = grids.get(series_uid)
            if grid is None:
                raise ValueError(f"segment {segment.label!r}: its source series is not given")
            candidates = [
                seg for seg in segmentations
                if seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
                and any(str(i.SegmentLabel) == segment.label for i in seg.SegmentSequence)
            ]
            if not candidates:
                if not segmentations:
                    raise ValueError("segments with measurements need the segmentation to "
                                     "reference")
                raise ValueError(f"segment {segment.label!r} is not in the segmentation")
            seg = candidates[0]
            if grid.planar and len(candidates) > 1:
                # One SEG per view: reference the view where the segment is largest.
                areas = segment.mask.reshape(segment.mask.shape[0], -1).sum(axis=1)
                key = grid.slices[int(np.argmax(areas))]
                seg = next((c for c in candidates if _seg_source_frame(c) == (
                    str(key.dataset.SOPInstanceUID), key.frame_number)), seg)
            if (not grid.planar and "FrameOfReferenceUID" in grid.first
                    and seg.get("FrameOfReferenceUID") != grid.first.FrameOfReferenceUID):
                raise ValueError("segmentation is not in the source frame of reference")
            number = next(int(i.SegmentNumber) for i in seg.SegmentSequence
                          if str(i.SegmentLabel) == segment.label)
            placed[segment.label] = (seg, number, grid)

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
        for segment in reported:
            seg, number, grid = placed[segment.label]
            build = _planar_group if grid.planar else _volumetric_group
            groups.append(build(segment, number, seg, grid, algorithm))
        groups.extend(_classification_group(c, findings, grids)
                      for c in findings.classifications)
        groups.extend(_region_group(r, findings, grids) for r in findings.region_measurements)
        if findings.study_measurements:
            groups.append(_plain_group("study", findings, findings.study_measurements))
    if not groups:
        # TID 1500 needs one group: say which algorithm looked, with no measurement.
        groups.append(_plain_group("no-measurements", findings))

    first = primary.first
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
    evaluations.ContentSequence = [  # type: ignore[assignment]  # highdicom accepts a list
        hd.sr.TextContentItem(
            name=codes.DCM.Comment, value=text,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        for text in report_comments(findings)
    ]
    report[0].ContentSequence.append(evaluations)

    # Evidence: the engine's series and the series a group references, not every one given.
    cited = {primary.series_uid}
    if not findings.declined:
        cited |= {grid.series_uid for _, _, grid in placed.values()}
        cited |= {uid for uid, grid in grids.items()
                  if any(c.source is not None and c.source.sop_instance_uid in
                         {str(ds.SOPInstanceUID) for ds in grid.instances}
                         for c in findings.classifications)}
        cited |= {r.region.series_uid for r in findings.region_measurements}
    evidence = [ds for uid, grid in grids.items() if uid in cited
                for ds in grid.instances] + segmentations
    if not findings.declined:
        evidence += [stub for stub in (_received_object(r, str(first.StudyInstanceUID))
                                       for r in findings.region_measurements) if stub]
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
