"""The DICOM node: networking, de-identification, completion, jobs, result objects, CLI."""

__version__ = "0.1.0"
