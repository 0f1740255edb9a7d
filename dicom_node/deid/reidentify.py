"""Re-identify results for clinical destinations, from the vault.

Every pseudonymous UID (any depth, file meta included) goes back to the original. The Patient and
General Study modules are restored verbatim from the vault payload, Specific Character Set
included. Series-level dates of source series are un-shifted. UIDs the node minted itself (not in
the vault), Content Date/Time and the result's own strings stay as produced.
"""

from __future__ import annotations

from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue

from dicom_node.deid.profile import shift_da, shift_dt
from dicom_node.deid.pseudonymize import IDENTITY_TAGS, SPECIFIC_CHARACTER_SET
from storage.vault import OriginalIdentity, Vault

# Written by the pseudonymizer; they do not describe the re-identified object.
_DEID_MARKERS = ("PatientIdentityRemoved", "DeidentificationMethod",
                 "DeidentificationMethodCodeSequence", "LongitudinalTemporalInformationModified")
_SERIES_DATES = ("SeriesDate", "AcquisitionDate", "AcquisitionDateTime")


class ReidentificationError(Exception):
    """A result that cannot be re-identified (its study is not in the vault)."""


def decode_payload(payload: bytes) -> Dataset:
    """The vault payload as a dataset of raw (undecoded) elements."""
    # read_dataset takes the transfer syntax as arguments: a plain byte stream is enough.
    return read_dataset(BytesIO(payload), is_implicit_VR=False, is_little_endian=True)


def _ui_values(ds: Dataset, found: set[str]) -> None:
    for elem in ds.iterall():
        if elem.VR == "UI" and elem.value:
            values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
            found.update(str(v) for v in values)


def _replace_uis(ds: Dataset, originals: dict[str, str]) -> None:
    for elem in ds.iterall():
        if elem.VR != "UI" or not elem.value:
            continue
        if isinstance(elem.value, MultiValue | list):
            elem.value = [originals.get(str(v), str(v)) for v in elem.value]
        else:
            elem.value = originals.get(str(elem.value), str(elem.value))


class Reidentifier:
    """Maps pseudonymous results back to the patient's real identity.

    Parameters
    ----------
    vault
        The vault the pseudonymizer's mappings were recorded in.
    """

    def __init__(self, vault: Vault):
        self.vault = vault

    def reidentify(self, ds: Dataset, revision: int | None = None) -> Dataset:
        """Re-identify ``ds`` in place and return it.

        Parameters
        ----------
        ds
            A result object of a pseudonymous study.
        revision
            The study's identity revision the result was computed on (its job's); ``None``
            for the latest identity received.

        Raises
        ------
        ReidentificationError
            The study's identity (of that revision) is not in the vault (nothing is guessed).
        """
        pseudo_study = str(ds.get("StudyInstanceUID", "") or "")
        with self.vault.database.session() as session:
            identity = self.vault.identity_for_study(pseudo_study, session, revision)
            if identity is None:
                raise ReidentificationError(
                    "the result's Study Instance UID is not a pseudonymous study in the vault"
                    + ("" if revision is None else f" with identity revision {revision}"))
            uids: set[str] = set()
            _ui_values(ds, uids)  # also decodes every element (charset switch below)
            meta = getattr(ds, "file_meta", None)
            if meta is not None:
                _ui_values(meta, uids)
            originals = self.vault.original_uids(uids, session)
        series_is_source = str(ds.get("SeriesInstanceUID", "") or "") in originals
        _replace_uis(ds, originals)
        if meta is not None:
            _replace_uis(meta, originals)
        if series_is_source and identity.date_offset_days:
            self._unshift_series(ds, identity)
        self._restore_identity(ds, identity)
        return ds

    @staticmethod
    def _unshift_series(ds: Dataset, identity: OriginalIdentity) -> None:
        # Only a series that came from the source carries shifted series dates; a series the
        # node created has today's dates.
        back = -identity.date_offset_days
        for keyword in _SERIES_DATES:
            if keyword in ds and ds[keyword].value:
                shift = shift_da if ds[keyword].VR == "DA" else shift_dt
                ds[keyword].value = shift(str(ds[keyword].value), back)

    @staticmethod
    def _restore_identity(ds: Dataset, identity: OriginalIdentity) -> None:
        original = decode_payload(identity.payload)
        for keyword in _DEID_MARKERS:
            if keyword in ds:
                del ds[keyword]
        for tag in list(ds.keys()):
            if int(tag) in IDENTITY_TAGS and tag not in original:
                del ds[tag]
        if SPECIFIC_CHARACTER_SET not in original and SPECIFIC_CHARACTER_SET in ds:
            del ds[SPECIFIC_CHARACTER_SET]
        for tag in original.keys():  # noqa: SIM118 - iterating a Dataset yields elements
            ds[tag] = original.get_item(tag)
        # The restored raw elements are in the source's charset: declare it as the original
        # encoding so they are written byte for byte (the result's own strings are decoded).
        implicit, little = ds.original_encoding
        ds.set_original_encoding(False if implicit is None else implicit,
                                 True if little is None else little, ds._character_set)
