"""Key-image secondary captures: content, no identity in the drawing, dciodvfy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageDraw
from pydicom.dataset import Dataset

from ai_engines.findings import Findings
from dicom_node.results import ResultOptions
from dicom_node.results.capture import BANNER, build_key_images
from tests.dicom_node.results.conftest import identifying_strings, save


def test_one_image_per_key_slice(findings: Findings, source_datasets: list[Dataset],
                                 options: ResultOptions) -> None:
    images = build_key_images(findings, source_datasets, options)
    # GTV key slice 5, Lung_L largest area slice 5 (third island), Speck 6, Edge 0.
    referenced = [i.SourceImageSequence[0].ReferencedSOPInstanceUID for i in images]
    assert referenced == [source_datasets[k].SOPInstanceUID for k in (0, 5, 6)]
    assert len({i.SeriesInstanceUID for i in images}) == 1
    for number, image in enumerate(images, start=1):
        assert image.InstanceNumber == number
        assert image.SamplesPerPixel == 3 and image.PhotometricInterpretation == "RGB"
        assert image.BurnedInAnnotation == "YES"
        assert image.StudyInstanceUID == source_datasets[0].StudyInstanceUID
        assert image.SpecificCharacterSet == "ISO_IR 192"
        assert image.SeriesNumber == 9004 and "AI" in image.SeriesDescription
        assert image.SOPInstanceUID.startswith("2.25.")
        pixels = image.pixel_array
        assert pixels.ndim == 3 and pixels.shape[2] == 3
        # The banner is drawn in dark red across the top.
        assert np.all(pixels[2, 2] == (160, 0, 0))


def test_outline_is_drawn_in_the_segment_colour(findings: Findings,
                                                source_datasets: list[Dataset],
                                                options: ResultOptions) -> None:
    images = build_key_images(findings, source_datasets, options)
    pixels = images[1].pixel_array.reshape(-1, 3)  # slice 5: GTV (red) and Lung_L (blue)
    for colour in ((255, 0, 0), (0, 128, 255)):
        assert np.any(np.all(pixels == colour, axis=1)), colour


def test_drawn_text_carries_no_identity(monkeypatch: pytest.MonkeyPatch, findings: Findings,
                                        declined_findings: Findings,
                                        source_datasets: list[Dataset],
                                        options: ResultOptions) -> None:
    drawn: list[str] = []
    original = ImageDraw.ImageDraw.text

    def record(self: ImageDraw.ImageDraw, xy: object, text: str, *args: object,
               **kwargs: object) -> None:
        drawn.append(text)
        original(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", record)
    build_key_images(findings, source_datasets, options)
    build_key_images(declined_findings, source_datasets, options)
    text = "\n".join(drawn)
    assert BANNER in text and "QC_TOO_FEW_SLICES" in text
    assert "Volume 2.35 ml" in text and "Long Axis 24.4 mm" in text and "Mean -12 HU" in text
    for value in identifying_strings(source_datasets[0]):
        assert value not in text
    for keyword in ("StudyDescription", "InstitutionName", "StudyID", "PatientID"):
        assert str(source_datasets[0].get(keyword, "@@")) not in text


def test_declined_run_gives_one_image(declined_findings: Findings,
                                      source_datasets: list[Dataset],
                                      options: ResultOptions) -> None:
    (image,) = build_key_images(declined_findings, source_datasets, options)
    assert "DECLINED" in image.ImageComments


def test_key_images_pass_dciodvfy(tmp_path: Path, findings: Findings,
                                  declined_findings: Findings,
                                  source_datasets: list[Dataset], options: ResultOptions,
                                  dciodvfy_errors: Callable[[Path], list[str]]) -> None:
    images = build_key_images(findings, source_datasets, options)
    images += build_key_images(declined_findings, source_datasets, options)
    for number, image in enumerate(images):
        assert dciodvfy_errors(save(image, tmp_path / f"sc{number}.dcm")) == []
