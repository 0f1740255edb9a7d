"""De-identification at the node's boundary (PS3.15 Annex E) and re-identification on egress.

See ``docs/deidentification.md``.
"""

from dicom_node.deid.leakcheck import check_clinical, check_research
from dicom_node.deid.profile import Profile, options_from_settings
from dicom_node.deid.pseudonymize import (
    OriginalIdentity,
    PseudonymizedInstance,
    Pseudonymizer,
    QuarantineRequired,
)
from dicom_node.deid.reidentify import ReidentificationError, Reidentifier
from dicom_node.deid.uids import UidMapper

__all__ = [
    "OriginalIdentity", "Profile", "PseudonymizedInstance", "Pseudonymizer", "QuarantineRequired",
    "ReidentificationError", "Reidentifier", "UidMapper", "check_clinical", "check_research",
    "options_from_settings",
]
