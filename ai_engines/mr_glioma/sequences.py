"""Which MR series is T1, T1 post-contrast (T1c), T2 or FLAIR: read from the headers.

Vendors name the same sequence differently ("AX T1 POST GD", "t1_mprage_tra_KM",
"T1W_3D_TFE+C", "FLAIR AX", "t2_tse_tra", "T2W_FLAIR"), so the text of the series description,
protocol name and sequence name is split into words and matched against vocabularies; when the
text says nothing, the timing parameters decide:

* FLAIR: inversion time 1500-3000 ms with TR >= 4000 ms (fluid-nulling inversion);
* T1: TR < 1000 ms and TE < 30 ms (spin/gradient echo), or TI 300-1300 ms with TE < 10 ms
  (MPRAGE-like inversion-prepared gradient echo);
* T2: TR >= 2000 ms and TE >= 70 ms without a fluid-nulling inversion.

A T1 is T1c when the Contrast/Bolus Agent attribute is filled or the text says so ("post",
"+C", "Gd", "KM" = Kontrastmittel, "contrast", "CE"), unless it says "pre".  Localizers,
diffusion (DWI/ADC/trace), perfusion, susceptibility, angiography, spectroscopy, subtractions
and proton density are ignored with the reason.  Among the series of one role the one with
the most slices wins, then the thinnest slices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ai_engines.volume import SeriesVolume

ROLES = ("T1c", "FLAIR", "T2", "T1")

_IGNORED_WORDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("localizer", frozenset({"localizer", "localiser", "loc", "scout", "survey", "3plane", "3pl", "aahead", "aascout", "plane_loc"})),
    ("diffusion", frozenset({"dwi", "diff", "diffusion", "dti", "adc", "trace", "tracew", "ep2d_diff", "b1000", "b0", "fa", "eadc", "resolve"})),
    ("perfusion", frozenset({"perf", "perfusion", "dsc", "dce", "asl", "pcasl", "pwi", "rcbv", "cbv", "cbf", "mtt", "ttp", "tmax"})),
    ("susceptibility", frozenset({"swi", "swan", "swip", "t2star", "hemo", "mag", "pha", "minip", "gre"})),
    ("angiography", frozenset({"tof", "mra", "angio", "venogram", "pc_mra"})),
    ("spectroscopy", frozenset({"svs", "csi", "mrs", "spectro", "press", "steam"})),
    ("subtraction", frozenset({"sub", "subtraction", "subtract"})),
    ("proton density", frozenset({"pd", "pdw", "pd_tse"})),
    ("derived map", frozenset({"mpr_thick", "moco", "mosaic", "colfa"})),
)
_IGNORED_IMAGE_TYPES = {
    "LOCALIZER": "localizer", "ADC": "diffusion", "TRACEW": "diffusion", "TRACE": "diffusion",
    "DIFFUSION": "diffusion", "FA": "diffusion", "PERFUSION": "perfusion", "SWI": "susceptibility",
    "MIN IP": "susceptibility", "MNIP": "susceptibility", "SUBTRACTION": "subtraction", "SUB": "subtraction",
}
_FLAIR_WORDS = frozenset({"flair", "darkfluid", "dark_fluid", "tirm", "fluid", "t2flair", "flair3d", "spcir", "spc_ir"})
_T1_WORDS = frozenset({
    "t1", "t1w", "t1wi", "mprage", "mp2rage", "spgr", "fspgr", "bravo", "tfe", "t1tfe", "vibe", "flash",
    "t1se", "t1ffe", "t1_mprage", "irfspgr", "t1flair", "3dt1", "t13d", "t1c", "t1ce", "t1gd", "t1km",
    "t1post", "t1pre",
})
_T2_WORDS = frozenset({"t2", "t2w", "t2wi", "t2tse", "t2_tse", "t2fse", "t23d", "3dt2", "blade", "propeller", "space", "cube"})
_CONTRAST_WORDS = frozenset({
    "post", "postcontrast", "postgd", "gd", "gad", "gado", "gadolinium", "km", "contrast", "ce", "c",
    "enh", "enhanced", "t1c", "t1ce", "t1gd", "t1km", "t1post", "dotarem", "gadovist", "multihance",
    "prohance", "magnevist", "clariscan",
})
_PRE_WORDS = frozenset({"pre", "precontrast", "nativ", "native", "t1pre", "plain", "noncontrast", "nc"})
# "+C", "C+", "+Gd", "+KM" and the like are not words: looked for in the raw text.
_CONTRAST_MARK = re.compile(r"\+\s*(c|gd|km|contrast|kontrast)\b|\bc\s*\+|\bpost\b", re.IGNORECASE)
_SAFE_TEXT = re.compile(r"[^A-Za-z0-9 _+\-*./()]")


@dataclass(frozen=True)
class SequenceIdentification:
    """The role of one series (or None) and why."""

    series_uid: str
    role: str | None
    evidence: str  # "description", "timing" or, when role is None, the reason
    label: str  # a sanitised, shortened description for notes


@dataclass(frozen=True)
class SequenceSelection:
    """The chosen series per role and every series' identification."""

    chosen: dict[str, SeriesVolume]
    identifications: tuple[SequenceIdentification, ...] = ()
    passed_over: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (label, reason)

    def notes(self) -> list[str]:
        """One line per series: role found (and how), or why it was not used."""
        lines = []
        chosen_uids = {v.series_uid: r for r, v in self.chosen.items()}
        for ident in self.identifications:
            if ident.series_uid in chosen_uids:
                lines.append(f"{chosen_uids[ident.series_uid]}: series '{ident.label}' (from {ident.evidence})")
            elif ident.role is None:
                lines.append(f"ignored series '{ident.label}': {ident.evidence}")
        for label, reason in self.passed_over:
            lines.append(f"not used: series '{label}': {reason}")
        return lines


def safe_label(text: str | None) -> str:
    """A header string fit for a note: printable ASCII subset, at most 40 characters."""
    if not text:
        return "(no description)"
    return _SAFE_TEXT.sub("?", text)[:40]


def _words(text: str) -> set[str]:
    """Lower-case words of a description, also joined pairs ("t1 post" -> "t1post")."""
    text = text.lower()
    parts = [p for p in re.split(r"[^a-z0-9*]+", text) if p]
    words = set(parts)
    words |= {a + b for a, b in zip(parts, parts[1:], strict=False)}
    # Glued tokens ("t1w3dtfe", "axt1post") contribute their sequence-family prefix.
    for part in parts:
        for stem in ("flair", "mprage", "t2star", "t1", "t2", "dwi", "adc", "swi"):
            if stem in part and stem not in words and not (stem == "t1" and "t10" in part):
                words.add(stem)
    if "t2*" in text:
        words.add("t2star")
    return words


def _timing_role(facts_tr: float | None, facts_te: float | None, facts_ti: float | None) -> str | None:
    tr, te, ti = facts_tr, facts_te, facts_ti
    if ti is not None and 1500 <= ti <= 3000 and (tr is None or tr >= 4000):
        return "FLAIR"
    if tr is not None and te is not None:
        if tr < 1000 and te < 30:
            return "T1"
        if ti is not None and 300 <= ti <= 1300 and te < 10:
            return "T1"
        if tr >= 2000 and te >= 70 and (ti is None or ti < 300):
            return "T2"
    return None


def identify(volume: SeriesVolume) -> SequenceIdentification:
    """The role of one series from its header facts."""
    facts = volume.facts
    label = safe_label(facts.series_description or facts.protocol_name)
    if volume.modality != "MR":
        return SequenceIdentification(volume.series_uid, None, f"modality {safe_label(volume.modality)}, not MR", label)
    image_type = {t.upper() for t in facts.image_type}
    for value, reason in _IGNORED_IMAGE_TYPES.items():
        if value in image_type:
            return SequenceIdentification(volume.series_uid, None, f"{reason} (image type {value})", label)
    raw = " ".join(t for t in (facts.series_description, facts.protocol_name, facts.sequence_name) if t)
    words = _words(raw)
    for reason, vocabulary in _IGNORED_WORDS:
        hit = words & vocabulary
        # "space"/"cube" T2 FLAIRs and a "t2" word keep a "gre"-free T2 from looking susceptibility.
        if hit and not (reason == "susceptibility" and hit == {"gre"} and words & (_T1_WORDS | _FLAIR_WORDS)):
            return SequenceIdentification(volume.series_uid, None, f"{reason} ('{sorted(hit)[0]}' in the description)", label)

    contrast_text = bool(words & _CONTRAST_WORDS or _CONTRAST_MARK.search(raw))
    pre_text = bool(words & _PRE_WORDS)
    agent = bool(facts.contrast_agent and facts.contrast_agent.strip())
    role: str | None = None
    evidence = "description"
    if words & _T1_WORDS and not (words & {"t2", "t2w"} and not words & {"t1", "t1w"}):
        role = "T1"  # includes GE "T1 FLAIR" (a T1-weighted inversion recovery)
    elif words & _FLAIR_WORDS:
        role = "FLAIR"
    elif words & _T2_WORDS:
        role = "T2"
    if role is None:
        role = _timing_role(facts.repetition_time_ms, facts.echo_time_ms, facts.inversion_time_ms)
        evidence = "TR/TE/TI"
        if role is None:
            if not raw and facts.repetition_time_ms is None:
                reason = "no description and no TR/TE"
            else:
                reason = "neither the description nor TR/TE/TI match T1, T1c, T2 or FLAIR"
            return SequenceIdentification(volume.series_uid, None, reason, label)
    if role == "T1" and (agent or (contrast_text and not pre_text)):
        role = "T1c"
        evidence += " + contrast agent attribute" if agent else " + contrast wording"
    return SequenceIdentification(volume.series_uid, role, evidence, label)


def select_sequences(series: tuple[SeriesVolume, ...] | list[SeriesVolume]) -> SequenceSelection:
    """Identify every series and pick the best per role: most slices, then thinnest slices."""
    identifications = [identify(s) for s in series]
    by_uid = {s.series_uid: s for s in series}
    chosen: dict[str, SeriesVolume] = {}
    passed_over = []
    for role in ROLES:
        candidates = [by_uid[i.series_uid] for i in identifications if i.role == role]
        if not candidates:
            continue
        candidates.sort(key=lambda s: (-s.shape[0], s.geometry.slice_spacing or 99.0))
        chosen[role] = candidates[0]
        for other in candidates[1:]:
            passed_over.append((safe_label(other.facts.series_description), f"another {role} has more or thinner slices"))
    return SequenceSelection(chosen, tuple(identifications), tuple(passed_over))
