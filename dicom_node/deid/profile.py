"""PS3.15 Annex E Table E.1-1 as a compiled lookup, and the actions applied to a dataset.

The table comes from ``ps315_e1_1.json``. ``scripts/generate_deid_table.py`` generates that file,
and ``docs/deidentification.md`` explains its source and edition. :class:`Profile` reads the table
once and resolves each row to one concrete action for the deployment's options. The result is a
``dict`` from tag to action. Applying the profile walks each element once, at every depth of
nested sequences.

Concrete actions after resolution
---------------------------------
``X`` remove; ``Z`` empty; ``D`` dummy for the VR; ``K`` keep (sequences are still walked);
``C`` clean (dates shifted, the descriptors of :data:`~dicom_node.deid.safe.SCRUBBED_DESCRIPTORS`
kept but scrubbed token by token, other text gets the Basic Profile action, sequences walked);
``U`` remap UIDs; ``U*`` keep the sequence and remap the UIDs inside it.

Before any rule, an element encoded as UN is read under its dictionary VR (PS3.5 6.2.2:
implicit little endian), so a UN-encoded sequence is walked like any other. A public attribute
the table does not list is removed unless :mod:`dicom_node.deid.safe` keeps it ("remove
unchecked elements"); a tag the dictionary does not know is removed.

Combined codes: the attribute's Type in the object's IOD is unknown here, so each combined code
resolves to the alternative that keeps any IOD valid: ``X/Z`` -> ``Z``; ``X/D``, ``Z/D`` and
``X/Z/D`` -> ``D``; ``X/Z/U*`` -> ``U*``.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pydicom.charset import (
    convert_encodings,
    custom_encoders,
    default_encoding,
    need_tail_escape_sequence_encodings,
    python_encoding,
)
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from dicom_node.config import DeidSettings
from dicom_node.deid import safe
from dicom_node.deid.scrub import Scrubber, ScrubContext
from dicom_node.deid.uids import CLASS_UID_TAGS, is_valid_uid, is_well_known
from dicom_node.elements import decode_un, dictionary_vr

TABLE_PATH = Path(__file__).with_name("ps315_e1_1.json")

# When several enabled options give an attribute different actions, the one that keeps the most
# wins: an option exists to retain information.
_PREFERENCE = {"K": 0, "C": 1, "U": 2, "D": 3, "Z": 4, "X": 5}
_COMBINED = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U*"}

TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR", "AS"})
STRING_VRS = TEXT_VRS | frozenset({"DA", "DT", "TM", "DS", "IS", "UI"})
_DUMMIES: dict[str, tuple[object, object]] = {
    # VR: (dummy, alternative used when the original already equals the dummy)
    "AE": ("ANONYMOUS", "ANONYMISED"), "AS": ("000Y", "001Y"), "CS": ("ANONYMIZED", "ANON"),
    "DA": ("19000101", "19000102"), "DT": ("19000101000000", "19000102000000"),
    "TM": ("000000", "000001"), "DS": ("0", "1"), "IS": ("0", "1"),
    "LO": ("ANONYMIZED", "ANONYMISED"), "LT": ("ANONYMIZED", "ANONYMISED"),
    "PN": ("ANONYMIZED", "ANONYMISED"), "SH": ("ANONYMIZED", "ANONYMISED"),
    "ST": ("ANONYMIZED", "ANONYMISED"), "UC": ("ANONYMIZED", "ANONYMISED"),
    "UT": ("ANONYMIZED", "ANONYMISED"), "UR": ("http://anonymized.invalid", "http://a.invalid"),
    "FL": (0.0, 1.0), "FD": (0.0, 1.0), "SL": (0, 1), "SS": (0, 1), "UL": (0, 1), "US": (0, 1),
    "SV": (0, 1), "UV": (0, 1), "AT": (0, 1),
    "OB": (b"\x00\x00", b"\x01\x00"), "OD": (b"\x00" * 8, b"\x01" + b"\x00" * 7),
    "OF": (b"\x00" * 4, b"\x01\x00\x00\x00"), "OL": (b"\x00" * 4, b"\x01\x00\x00\x00"),
    "OV": (b"\x00" * 8, b"\x01" + b"\x00" * 7), "OW": (b"\x00\x00", b"\x01\x00"),
    "UN": (b"\x00\x00", b"\x01\x00"),
}

# Option keys of the generated table that DeidSettings can switch on.
SUPPORTED_OPTIONS = (
    "retain_longitudinal_modified_dates", "retain_patient_characteristics",
    "retain_device_identity", "clean_descriptors", "retain_safe_private",
)


def options_from_settings(settings: DeidSettings) -> frozenset[str]:
    """The table option columns switched on by a deployment's :class:`DeidSettings`."""
    on = set()
    if settings.retain_longitudinal_modified_dates:
        on.add("retain_longitudinal_modified_dates")
    if settings.retain_patient_characteristics:
        on.add("retain_patient_characteristics")
    if settings.retain_device_identity:
        on.add("retain_device_identity")
    if settings.clean_descriptors:
        on.add("clean_descriptors")
    if settings.private_tag_allowlist:
        on.add("retain_safe_private")
    return frozenset(on)


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE_PATH) -> dict:
    """The generated table (parsed once per process)."""
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Rule:
    """One table row resolved for a set of options."""

    pattern: str
    name: str
    vr: str | None
    basic: str
    action: str  # concrete action after options and combined-code resolution
    fallback: str  # concrete Basic Profile action, used when cleaning must give up


def _concrete(code: str) -> str:
    return _COMBINED.get(code, code)


def resolve(row: dict, options: Iterable[str]) -> str:
    """The table action for ``row`` (before combined-code resolution) under ``options``."""
    enabled = [row["options"][o] for o in options if o in row.get("options", {})]
    if not enabled:
        return row["basic"]
    return min(enabled, key=lambda a: _PREFERENCE.get(a, 9))


@dataclass
class ActionContext:
    """What applying the profile to one instance needs besides the table.

    Attributes
    ----------
    pseudo_uid
        Maps an original UID to its pseudonym.
    date_offset_days
        Days added to DA/DT values when dates are shifted, else ``None``.
    scrub
        Name parts and identifiers of this instance, cut out of every kept descriptor.
    scrubber
        The scrubber with the site's word list.
    private_allowlist
        ``{(group, private creator): {element low bytes}}`` kept under Retain Safe Private.
    uid_mappings
        Filled while applying: pseudonymous UID -> original UID.
    """

    pseudo_uid: Callable[[str], str]
    date_offset_days: int | None = None
    scrub: ScrubContext = field(default_factory=ScrubContext)
    scrubber: Scrubber = field(default_factory=Scrubber)
    private_allowlist: dict[tuple[int, str], set[int]] = field(default_factory=dict)
    uid_mappings: dict[str, str] = field(default_factory=dict)


def parse_private_allowlist(entries: Iterable[str]) -> dict[tuple[int, str], set[int]]:
    """``"(0019,xx0c) SIEMENS MR HEADER"`` -> ``{(0x0019, "SIEMENS MR HEADER"): {0x0c}}``."""
    allow: dict[tuple[int, str], set[int]] = {}
    for entry in entries:
        text = entry.strip()
        if not (text.startswith("(") and ")" in text):
            raise ValueError(f"private allow-list entry not '(gggg,xxee) creator': {entry!r}")
        tag, creator = text[1:].split(")", 1)
        group_s, element_s = (p.strip().lower() for p in tag.split(","))
        group = int(group_s, 16)
        if group % 2 == 0 or not element_s.startswith("xx"):
            raise ValueError(f"private allow-list entry needs an odd group and xxee: {entry!r}")
        allow.setdefault((group, creator.strip()), set()).add(int(element_s[2:], 16))
    return allow


class Profile:
    """Table E.1-1 compiled for one set of options.

    Parameters
    ----------
    options
        Option keys of the table (``"retain_longitudinal_modified_dates"``, ...).
    table
        The parsed table; defaults to the packaged ``ps315_e1_1.json``.
    """

    def __init__(self, options: Iterable[str] = (), table: dict | None = None):
        self.table = table or load_table()
        self.options = frozenset(options)
        unknown = self.options - set(self.table["options"])
        if unknown:
            raise ValueError(f"unknown de-identification options: {sorted(unknown)}")
        self.rules: list[Rule] = []
        self.exact: dict[int, Rule] = {}
        self.masked: list[tuple[int, int, Rule]] = []  # (mask, value, rule)
        self.private_rule: Rule | None = None
        for row in self.table["attributes"]:
            action = _concrete(resolve(row, self.options))
            rule = Rule(row["tag"], row["name"], row.get("vr"), row["basic"], action,
                        _concrete(row["basic"]))
            self.rules.append(rule)
            pattern = row["tag"]
            if pattern == "private":
                self.private_rule = rule
            elif "x" in pattern:
                mask = int("".join("0" if c == "x" else "f" for c in pattern), 16)
                value = int(pattern.replace("x", "0"), 16)
                self.masked.append((mask, value, rule))
            else:
                self.exact[int(pattern, 16)] = rule
        self._masked_groups = {value >> 24 for _, value, _ in self.masked}

    def option_codes(self) -> list[tuple[str, str]]:
        """(code value, code meaning) of each option applied, in code order (CID 7050)."""
        codes = [(self.table["options"][o]["code"], self.table["options"][o]["meaning"])
                 for o in self.options]
        return sorted(codes)

    def rule_for(self, tag: int) -> Rule | None:
        """The rule for a public tag, by exact tag or by a repeating-group pattern."""
        rule = self.exact.get(tag)
        if rule is None and (tag >> 24) in self._masked_groups:
            for mask, value, masked_rule in self.masked:
                if tag & mask == value and (tag >> 16) % 2 == 0:
                    return masked_rule
        return rule

    # -- applying ----------------------------------------------------------------------------

    def apply(self, ds: Dataset, ctx: ActionContext) -> None:
        """De-identify ``ds`` in place (not its file meta), at every depth."""
        self._private(ds, ctx)
        elements = ds._dict  # as get_item(keep_deferred=True): no deferred value is read
        for tag in list(ds.keys()):
            t = int(tag)
            if (t >> 16) % 2:
                continue  # private: handled above
            if t & 0xFFFF == 0:
                del ds[tag]  # group length: stale once elements are removed
                continue
            vr = elements[tag].VR
            if not vr or vr == "UN":
                vr = decode_un(ds, tag)  # else decode_un would return the same VR
            if vr == "UN" and dictionary_vr(t) is None:
                del ds[tag]  # a tag the dictionary does not know: nothing can vouch for it
                continue
            rule = self.rule_for(t)
            if rule is None:
                self._outside_table(ds, tag, vr, ctx)
            else:
                self._act(ds, tag, vr, rule.action, rule, ctx)

    def _outside_table(self, ds: Dataset, tag, vr: str, ctx: ActionContext) -> None:  # noqa: ANN001
        # Remove unchecked elements: only what the safe lists keep survives (safe.py).
        t = int(tag)
        if vr == "SQ":
            self._walk_items(ds, tag, ctx)
        elif vr == "UI":
            self._remap(ds, tag, ctx)
        elif vr in ("DA", "DT"):
            if ctx.date_offset_days is None:
                del ds[tag]
            else:
                self._shift(ds, tag, vr, ctx)
        elif vr in safe.NUMBER_VRS:
            return
        elif vr in _FORMS:
            if not _has_form(ds, tag, vr):
                del ds[tag]
        elif t == safe.SPECIFIC_CHARACTER_SET:
            if not _known_charsets(ds[tag].value):
                del ds[tag]
        elif t in safe.CODED_TEXT:
            self._scrub(ds, tag, ctx, kind="code")
        elif vr == "CS":
            self._scrub(ds, tag, ctx, kind="coded")
        elif t in safe.SAFE_TEXT:
            self._scrub(ds, tag, ctx, kind="text")
        elif t in safe.SAFE_BULK:
            return
        else:
            del ds[tag]

    def _scrub(self, ds: Dataset, tag, ctx: ActionContext, *, kind: str) -> None:  # noqa: ANN001
        if _kept_as_read(ds, tag, ctx, kind):
            return
        elem = ds[tag]
        value = elem.value
        if value is None or value == "":
            return
        if isinstance(value, bytes | bytearray):
            del ds[tag]  # text that could not be decoded cannot be checked
            return
        # A value the scrubber leaves as it is is not assigned again (pydicom would validate
        # it again); the element is written the same either way.
        if isinstance(value, MultiValue | list):
            cleaned = [ctx.scrubber.scrub(str(v), ctx.scrub, kind=kind) for v in value]
            if not all(c and c == v for c, v in zip(cleaned, value, strict=True)):
                elem.value = [c for c in cleaned if c] or None
        else:
            cleaned_one = ctx.scrubber.scrub(str(value), ctx.scrub, kind=kind)
            if cleaned_one != value:
                elem.value = cleaned_one or None

    def _act(self, ds: Dataset, tag, vr: str, action: str, rule: Rule,  # noqa: ANN001
             ctx: ActionContext) -> None:
        if action == "X":
            del ds[tag]
        elif action == "Z":
            elem = ds[tag]
            elem.value = Sequence() if vr == "SQ" else None
        elif action == "D":
            if vr == "UI":
                self._remap(ds, tag, ctx)  # a UID's dummy is a consistent pseudonymous UID
            else:
                self._dummy(ds, tag, vr)
        elif action == "K":
            if vr == "SQ":
                self._walk_items(ds, tag, ctx)
            elif vr in _FORMS and not _has_form(ds, tag, vr):
                del ds[tag]  # "K" keeps an age or a weight, not text posing as one
            elif vr in TEXT_VRS and vr != "AS":
                # Kept as the option says (serial numbers keep their digits), but never with a
                # name or identifier of the data set in it.
                self._scrub(ds, tag, ctx, kind="code")
        elif action == "U":
            if vr == "UI":
                self._remap(ds, tag, ctx)
            else:
                self._dummy(ds, tag, vr)
        elif action == "U*":
            if vr == "SQ":
                self._walk_items(ds, tag, ctx)
            else:
                ds[tag].value = None
        elif action == "C":
            self._clean(ds, tag, vr, rule, ctx)
        else:  # pragma: no cover - the generator validates actions
            raise ValueError(f"unknown action {action!r} for {rule.pattern}")

    def _walk_items(self, ds: Dataset, tag, ctx: ActionContext) -> None:  # noqa: ANN001
        for item in ds[tag].value or ():
            self.apply(item, ctx)

    def _remap(self, ds: Dataset, tag, ctx: ActionContext) -> None:  # noqa: ANN001
        elem = ds[tag]
        value = elem.value
        if not value:
            return
        if isinstance(value, bytes | bytearray):
            value = value.decode("ascii", "replace")
        # Class, scheme and syntax UIDs name no instance: kept, when they are UIDs at all.
        keep = int(tag) in CLASS_UID_TAGS
        if keep and any(str(v).strip("\x00 ").lower() in ctx.scrub.identifiers
                        for v in (value if isinstance(value, MultiValue | list) else [value])):
            keep = False  # an instance UID posing as a class UID
        if isinstance(value, MultiValue | list):
            elem.value = [self._pseudo(str(v), ctx, keep) for v in value]
        else:
            elem.value = self._pseudo(str(value), ctx, keep)

    @staticmethod
    def _pseudo(uid: str, ctx: ActionContext, keep_class: bool = False) -> str:
        uid = uid.strip("\x00 ")
        if not uid or is_well_known(uid) or (keep_class and is_valid_uid(uid)):
            return uid
        pseudo = ctx.pseudo_uid(uid)
        ctx.uid_mappings[pseudo] = uid
        return pseudo

    @staticmethod
    def _dummy(ds: Dataset, tag, vr: str) -> None:  # noqa: ANN001
        elem = ds[tag]
        if vr == "SQ":
            # A sequence's dummy: one empty item (non-zero length, no content).
            elem.value = Sequence([Dataset()])
            return
        dummy, alternative = _DUMMIES.get(vr, ("ANONYMIZED", "ANONYMISED"))
        original = elem.value
        elem.value = alternative if original == dummy else dummy

    def _shift(self, ds: Dataset, tag, vr: str, ctx: ActionContext) -> None:  # noqa: ANN001
        elem = ds[tag]
        value = elem.value
        if not value:
            return
        days = ctx.date_offset_days or 0
        shift = shift_da if vr == "DA" else shift_dt
        if isinstance(value, MultiValue | list):
            shifted = [shift(str(v), days) for v in value]
            elem.value = None if any(s is None for s in shifted) else shifted
        else:
            elem.value = shift(str(value), days)

    def _clean(self, ds: Dataset, tag, vr: str, rule: Rule,  # noqa: ANN001
               ctx: ActionContext) -> None:
        if vr == "SQ":
            self._walk_items(ds, tag, ctx)
        elif vr in ("DA", "DT"):
            if ctx.date_offset_days is None:
                self._act(ds, tag, vr, rule.fallback, rule, ctx)
            else:
                self._shift(ds, tag, vr, ctx)
        elif vr == "TM":
            # Modified Dates: times keep their value (only the day is shifted), if times.
            if not _has_form(ds, tag, vr):
                del ds[tag]
        elif int(tag) == TIMEZONE_OFFSET:
            if not _has_form(ds, tag, "timezone"):
                del ds[tag]
        elif vr in TEXT_VRS and int(tag) in safe.SCRUBBED_DESCRIPTORS:
            self._scrub(ds, tag, ctx, kind="coded" if vr == "CS" else "text")
        else:
            # Other free text, and bulk data: cleaning cannot prove it safe, so the Basic
            # Profile action applies.
            fallback = "D" if rule.fallback == "C" else rule.fallback
            self._act(ds, tag, vr, fallback, rule, ctx)

    @staticmethod
    def _private(ds: Dataset, ctx: ActionContext) -> None:
        private = [t for t in ds.keys() if t.group % 2]  # noqa: SIM118 - iterating a Dataset yields elements
        if not private:
            return
        keep_creators: set[int] = set()
        drop: list = []
        for tag in private:
            element = tag.element
            if 0x0010 <= element <= 0x00FF:
                continue  # private creator: decided after its data elements
            if element < 0x1000:  # group length and reserved elements
                drop.append(tag)
                continue
            creator_tag = (tag.group << 16) | (element >> 8)
            creator_elem = ds.get(creator_tag)
            creator = str(creator_elem.value).strip() if creator_elem is not None else ""
            allowed = ctx.private_allowlist.get((tag.group, creator))
            if allowed and (element & 0xFF) in allowed:
                keep_creators.add(creator_tag)
            else:
                drop.append(tag)
        for tag in private:
            if 0x0010 <= tag.element <= 0x00FF and int(tag) not in keep_creators:
                drop.append(tag)
        for tag in drop:
            del ds[tag]


# VRs whose values pydicom decodes (pydicom.values) as: one string split at backslashes after
# trailing padding is removed, in the default character set (convert_string; not AE, whose
# values also lose leading spaces, nor AS, which is not scrubbed); values split at
# backslashes, each without trailing padding, in the data set's character set (convert_text);
# one value without trailing padding, in the data set's character set (convert_single_string).
_STRING_SPLIT = frozenset({"CS"})
_TEXT_SPLIT = frozenset({"SH", "LO", "UC"})
_TEXT_SINGLE = frozenset({"LT", "ST", "UT"})
_ESC = 0x1B


@lru_cache(maxsize=64)
def _text_codec(charset: str | tuple[str, ...]) -> str | None:
    """The Python codec pydicom decodes text in ``charset`` with, when it is one plain codec
    (no ISO 2022 code extensions, no pydicom-specific decoder), else ``None``."""
    try:
        codecs = convert_encodings(list(charset) if isinstance(charset, tuple) else charset)
    except (LookupError, ValueError):
        return None
    codec = codecs[0]
    if len(codecs) > 1 or codec in custom_encoders or codec in need_tail_escape_sequence_encodings:
        return None
    return codec


def _kept_as_read(ds: Dataset, tag, ctx: ActionContext, kind: str) -> bool:  # noqa: ANN001
    """True when an element not yet decoded would come out of :meth:`Profile._scrub` unchanged
    and be written back byte for byte as received: it is then left undecoded (pydicom's
    decoding and validation cost more than the scrubbing).

    The element's values are decoded here exactly as pydicom decodes them; each is scrubbed as
    ``_scrub`` scrubs it, and only when none changes and the values encode back to the very
    bytes received (canonical padding, no empty values) is the element left as it is.  Anything
    else (multi-byte character sets, escape sequences, undecodable bytes, other VRs) goes the
    ordinary way.
    """
    raw = ds.get_item(tag, keep_deferred=True)
    if type(raw) is not RawDataElement or not isinstance(raw.value, bytes):
        return False
    data, vr = raw.value, raw.VR
    if vr in _STRING_SPLIT:
        codec = default_encoding
    elif vr in _TEXT_SPLIT or vr in _TEXT_SINGLE:
        charset = ds.original_character_set or ds._character_set
        text_codec = _text_codec(tuple(charset) if isinstance(charset, list | MultiValue)
                                 else charset)
        if text_codec is None or _ESC in data:
            return False
        codec = text_codec
    else:
        return False
    try:
        text = data.decode(codec)
    except (UnicodeError, LookupError):
        return False
    if vr in _STRING_SPLIT:
        values = text.rstrip(" \x00").split("\\")
    elif vr in _TEXT_SPLIT:
        values = [v.rstrip("\x00 ") for v in text.split("\\")]
    else:
        values = [text.rstrip("\x00 ")]
    if not all(values):
        return False  # empty values: _scrub keeps or drops them, the ordinary way
    scrub = ctx.scrubber.scrub
    if any(scrub(v, ctx.scrub, kind=kind) != v for v in values):
        return False
    joined = "\\".join(values)
    encoded = joined.encode(codec)
    if len(encoded) % 2:
        encoded += b" "
    return encoded == data


def shift_da(value: str, days: int) -> str | None:
    """Shift a DA ``YYYYMMDD`` by ``days``; ``None`` when it is not a plain date."""
    value = value.strip()
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        day = _dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
        return (day + _dt.timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return None


def shift_dt(value: str, days: int) -> str | None:
    """Shift the date part of a DT; time, fraction and UTC offset stay as they are."""
    value = value.strip()
    if len(value) < 8:
        return None  # year or month precision: cannot be shifted by days
    if not _DT_TAIL.fullmatch(value[8:]):
        return None  # anything after the date must be a time and an offset
    head = shift_da(value[:8], days)
    return None if head is None else head + value[8:]


_DT_TAIL = re.compile(r"(\d{2}){0,3}(\.\d{1,6})?([+-]\d{4})?")
# Values of these VRs are kept only when they have the VR's form (PS3.5 6.2).
_FORMS = {
    "TM": re.compile(r"(\d{2}(:?\d{2}(:?\d{2}(\.\d{1,6})?)?)?)?"),
    "AS": re.compile(r"\d{3}[DWMY]"),
    "DS": re.compile(r"[0-9+\-.eE ]*"),
    "IS": re.compile(r"[0-9+\- ]*"),
    "timezone": re.compile(r"([+-]\d{4})?"),
}
TIMEZONE_OFFSET = 0x00080201


def _has_form(ds: Dataset, tag, vr: str) -> bool:  # noqa: ANN001
    """True when every value of the element has the form of its VR (as received)."""
    raw = ds.get_item(tag)
    value = getattr(raw, "value", None)
    if isinstance(value, bytes | bytearray):
        parts = value.decode("latin-1").rstrip("\x00 ").split("\\")
    else:
        try:
            value = ds[tag].value
        except (ValueError, TypeError, OverflowError):
            return False
        if value is None:
            return True
        values = value if isinstance(value, MultiValue | list) else [value]
        parts = [str(getattr(v, "original_string", v)) for v in values]
    pattern = _FORMS[vr]
    return all(pattern.fullmatch(p.strip()) for p in parts)


def _known_charsets(value: object) -> bool:
    """True when Specific Character Set names only character sets pydicom knows."""
    values = value if isinstance(value, MultiValue | list) else [value]
    return all(not v or python_encoding.get(str(v).strip()) is not None for v in values)
