"""Deterministic, keyed pseudonyms: UIDs, patient IDs and patient names.

``2.25.`` + the integer of the first 16 bytes of HMAC-SHA256(site secret, original UID). The same
original always gets the same pseudonym, across restarts and across studies of one patient. The
hash is one-way, so re-identification reads the reverse map from the vault.
"""

from __future__ import annotations

import base64
import hmac
import re

from pydicom.uid import UID_dictionary

# A UI value: digits and dots, no empty or zero-padded component, at most 64 characters.
_UID_SYNTAX = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")

# UI attributes that name a class, scheme or syntax rather than an instance. They are never
# remapped, even when their value lies outside the DICOM root (private SOP classes, SNOMED's
# coding-scheme UID, ...).
CLASS_UID_TAGS = frozenset({
    0x00020002,  # MediaStorageSOPClassUID
    0x00020010,  # TransferSyntaxUID
    0x00020012,  # ImplementationClassUID
    0x00041510,  # ReferencedSOPClassUIDInFile
    0x00041512,  # ReferencedTransferSyntaxUIDInFile
    0x0004151A,  # ReferencedRelatedGeneralSOPClassUIDInFile
    0x00080016,  # SOPClassUID
    0x0008001A,  # RelatedGeneralSOPClassUID
    0x0008001B,  # OriginalSpecializedSOPClassUID
    0x00080062,  # SOPClassesInStudy
    0x0008010C,  # CodingSchemeUID
    0x00080117,  # ContextUID
    0x00080118,  # MappingResourceUID
    0x00081150,  # ReferencedSOPClassUID
    0x04000010,  # MACCalculationTransferSyntaxUID
    0x04000510,  # EncryptedContentTransferSyntaxUID
})

PSEUDO_PREFIX = "ANON"


def is_well_known(uid: str) -> bool:
    """True for UIDs registered in the DICOM dictionary (PS3.6 Annex A, as pydicom ships it).

    Only registered UIDs (SOP classes, transfer syntaxes, well-known frames of reference,
    coding schemes, ...) are kept. Anything else under the ``1.2.840.10008`` root is remapped
    like any instance UID: a sender can put any text there, ``/`` and ``..`` included.
    """
    return uid in UID_dictionary


def is_valid_uid(uid: str) -> bool:
    """True when ``uid`` is a syntactically valid UI value (PS3.5 9.1)."""
    return 0 < len(uid) <= 64 and _UID_SYNTAX.fullmatch(uid) is not None


class UidMapper:
    """Keyed, deterministic pseudonyms for one site secret.

    Parameters
    ----------
    secret
        The site secret (at least 16 bytes), from :func:`storage.keys.load_or_create_key`.
    """

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("the UID secret must be at least 16 bytes")
        self._secret = bytes(secret)
        # Cache: a series of 500 slices repeats the same study/series/FoR UIDs 500 times.
        self._cache: dict[str, str] = {}
        self._macs: dict[tuple[bytes, str], bytes] = {}

    def _mac(self, label: bytes, value: str) -> bytes:
        # One entry per patient and label: every instance of a series asks again.
        key = (label, value)
        hit = self._macs.get(key)
        if hit is None:
            hit = hmac.digest(self._secret, label + b"\x00" + value.encode("utf-8"), "sha256")
            if len(self._macs) > 100_000:
                self._macs.clear()
            self._macs[key] = hit
        return hit

    def pseudo_uid(self, uid: str) -> str:
        """The pseudonymous UID for ``uid`` (well-known UIDs come back unchanged)."""
        uid = uid.strip("\x00 ")
        if not uid or is_well_known(uid):
            return uid
        hit = self._cache.get(uid)
        if hit is None:
            # No label here: the mapping is exactly the documented HMAC(secret, uid).
            digest = hmac.digest(self._secret, uid.encode("ascii", "replace"), "sha256")
            hit = "2.25." + str(int.from_bytes(digest[:16], "big"))
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[uid] = hit
        return hit

    def pseudo_suffix(self, patient_key: str) -> str:
        """Ten base32 characters that stand for one patient."""
        digest = self._mac(b"patient", patient_key)
        return base64.b32encode(digest).decode("ascii")[:10]

    def pseudo_patient_id(self, patient_key: str) -> str:
        """``ANON-<10 base32 chars>``: the same patient always gets the same pseudonym."""
        return f"{PSEUDO_PREFIX}-{self.pseudo_suffix(patient_key)}"

    def pseudo_patient_name(self, patient_key: str) -> str:
        """``ANON^<same 10 chars>``, a valid PN (family^given)."""
        return f"{PSEUDO_PREFIX}^{self.pseudo_suffix(patient_key)}"

    def date_offset_days(self, patient_key: str, max_days: int) -> int:
        """A per-patient shift in ``[-max_days, -1]`` days (always into the past, never zero)."""
        digest = self._mac(b"date-shift", patient_key)
        return -(1 + int.from_bytes(digest[:8], "big") % max_days)
