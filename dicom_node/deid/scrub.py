"""Token-by-token scrubbing of the free-text descriptors the node keeps.

Series Description, Protocol Name, Body Part Examined, Sequence Name and the few other text
attributes that engines read are kept, but every part that may identify someone is cut out:

* dates and times in any common notation (``20231105``, ``2023-11-05``, ``05.11.2023``,
  ``11/05/2023``, ``5 Nov 2023``, ``Nov 5, 2023``, ``14:32``, ``143205``): a real date left in
  free text would undo the date shift;
* numbers of four or more digits (IDs, accession numbers), except diffusion b-values such as
  ``b1000``;
* telephone numbers, e-mail addresses and web addresses;
* a title (``Dr``, ``Prof.``, ``Mrs``, ``Herr``, ...) and the name that follows it;
* every part of every person name in the data set, whatever its length, and the instance's
  identifiers (patient IDs, accession number, ...); name parts are also cut inside words when
  written in a script without spaces (Chinese, Japanese, Korean, Thai) or when five letters
  or longer ("CTMueller"), in every kind of value;
* the site's own word list (``[deid] scrub_words``).

What remains keeps its separators, so MR sequence names such as ``T1 MPRAGE``, ``AX T2 FLAIR``,
``t1_se_tra_KM`` and ``DWI b1000`` survive unchanged.

Three kinds of value:

* ``"text"``: everything above;
* ``"coded"`` (CS values): no title rule, and name parts shorter than three characters are not
  cut: defined terms include single letters (``M``/``P`` in Image Type) that a middle initial
  must not erase;
* ``"code"`` (Code Value, Coding Scheme Designator, and text an option keeps, such as serial
  numbers or Ethnic Group): like ``"coded"``, but long numbers and bare digit runs that look
  like telephone numbers stay (codes such as SNOMED ``12738006`` or ``R-10242`` are numbers by
  design), and a title with the name after it is cut as in ``"text"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "januar|jänner|februar|märz|maerz|mai|juni|juli|oktober|dezember|"
    "janvier|février|fevrier|mars|avril|juin|juillet|août|aout|septembre|octobre|novembre|"
    "décembre|decembre|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|okt|nov|dec|dez|mär|mrz"
)
_DAY = r"(?:[0-3]?\d)(?:st|nd|rd|th|\.)?"
_YEAR = r"(?:\d{4}|'?\d{2})"
# Patterns cut out of the whole string before tokens are looked at (they span separators).
_PATTERNS = [
    # e-mail and web addresses
    re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)+", re.IGNORECASE),
    re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+", re.IGNORECASE),
    # dates with a month name: 5 Nov 2023, 5. November 2023, Nov 5, 2023, November 2023
    re.compile(rf"\b{_DAY}\s*(?:{_MONTHS})\b\.?,?(?:\s*{_YEAR}\b)?", re.IGNORECASE),
    re.compile(rf"\b(?:{_MONTHS})\b\.?\s*{_DAY}(?:,?\s*{_YEAR}\b)?", re.IGNORECASE),
    re.compile(rf"\b(?:{_MONTHS})\b\.?,?\s*\d{{4}}\b", re.IGNORECASE),
    # numeric dates: 2023-11-05, 05.11.2023, 11/05/2023, 5/11/23, 2023.11.05
    re.compile(r"(?<![\w.])\d{1,4}[./-]\d{1,2}[./-]\d{1,4}(?![\w]|\.\d)"),
    # times: 14:32, 14:32:05, 14:32:05.123, 9.30h, 14h32
    re.compile(r"(?<![\w:])\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?![\w:])"),
    re.compile(r"(?<![\w.])\d{1,2}[.h]\d{2}\s*(?:h|uhr|am|pm)\b", re.IGNORECASE),
    re.compile(r"(?<![\w.])\d{1,2}h\d{2}\b", re.IGNORECASE),
    # telephone numbers: +49 89 1234-567, (089) 123 456 78, 0049/89/123456 (checked below)
    re.compile(r"(?<![\w.])(?:\+|00)?\(?\d[\d\s()/.-]{5,}\d(?![\w.])"),
]
_PHONE = _PATTERNS[-1]
_TOKEN = re.compile(r"[^\W_]+")
_DIGITS4 = re.compile(r"\d{4,}")
_B_VALUE = re.compile(r"[bB]\d{1,5}")
# Titles and the academic grades that may sit between a title and the name.
TITLES = frozenset({
    "dr", "drs", "prof", "professor", "mr", "mrs", "ms", "miss", "mx", "sir", "dame", "madam",
    "herr", "frau", "hr", "fr", "doc", "dott", "dra", "sr", "sra", "srta", "mme", "mlle",
    "monsieur", "madame", "señor", "señora", "pd", "priv", "doz",
})
_GRADES = frozenset({"med", "rer", "nat", "dent", "phil", "habil", "dipl", "ing", "univ",
                     "vet", "jur", "mult", "hc", "h", "c"})
_SEPARATORS = " _-/\\,;:.+()[]{}|"
_NUMERIC = re.compile(r"[0-9.]+")
_MEMO_SIZE = 20_000


@dataclass(frozen=True)
class ScrubContext:
    """What one data set contributes to scrubbing.

    Attributes
    ----------
    name_parts
        Lower-case parts of every person name found anywhere in the data set.
    identifiers
        Lower-case identifying strings (patient IDs, accession number, study ID, ...).
    """

    name_parts: frozenset[str] = frozenset()
    identifiers: frozenset[str] = frozenset()

    @cached_property
    def _split(self) -> tuple[frozenset[str], frozenset[str]]:
        """(identifiers of digits and dots only, i.e. UIDs and numbers; the others)."""
        numeric = frozenset(i for i in self.identifiers if _NUMERIC.fullmatch(i))
        return numeric, self.identifiers - numeric


class Scrubber:
    """Removes identifying tokens from free text.

    Parameters
    ----------
    words
        The site's word list (``[deid] scrub_words``): each is removed wherever it appears as a
        token or, for several words, as a phrase; case is ignored.
    """

    def __init__(self, words: Iterable[str] = ()):
        phrases = [w.strip() for w in words if w and w.strip()]
        self.words = frozenset(w.lower() for w in phrases if _TOKEN.fullmatch(w))
        self._phrases = [re.compile(re.escape(p), re.IGNORECASE)
                         for p in phrases if not _TOKEN.fullmatch(p)]
        # Results by what decides them (see scrub): the slices of a series carry the same
        # descriptors and names and differ in UIDs, which a descriptor rarely contains.
        self._results: dict[tuple, str] = {}

    def scrub(self, text: str, ctx: ScrubContext, *, kind: str = "text") -> str:
        """``text`` without anything that may identify someone.

        Parameters
        ----------
        text
            One value (multi-valued attributes are scrubbed value by value).
        ctx
            Name parts and identifiers of the data set.
        kind
            ``"text"``, ``"coded"`` (CS) or ``"code"`` (Code Value); see the module doc.
        """
        if not text:
            return text
        # An identifier of digits and dots decides nothing for a text it is not part of: it is
        # cut where it occurs in the lower-cased text or equals a lower-cased token, and
        # lowering neither makes nor changes a digit or a dot, so either needs it in ``text``.
        # The result is therefore memoised by the text, the kind, the name parts, the other
        # identifiers and those numeric ones found in the text.
        numeric, others = ctx._split
        key = (text, kind, ctx.name_parts, others,
               frozenset(i for i in numeric if i in text) if numeric else numeric)
        result = self._results.get(key)
        if result is None:
            result = self._scrub(text, ctx, kind)
            if len(self._results) >= _MEMO_SIZE:
                self._results.clear()  # a bound, not a correctness need
            self._results[key] = result
        return result

    def _scrub(self, text: str, ctx: ScrubContext, kind: str) -> str:
        coded = kind != "text"
        cut = [False] * len(text)

        def mark(start: int, end: int) -> None:
            for i in range(start, end):
                cut[i] = True

        lowered, origin = _lower(text)
        inside_words = [ident for ident in ctx.identifiers
                        if len(ident) >= 3]  # shorter ones only as whole tokens below
        # Name parts are cut inside words too where words are not separated: in Chinese,
        # Japanese, Korean or Thai text a name is glued to what follows ("山田様", "김민수님"),
        # and a Latin name of five or more letters glued to a prefix ("CTMueller", a code
        # value "X1MUELLER") still names the patient. Shorter Latin parts stay token-only
        # ("Li" must not cut "Lipid", "M" not a defined term).
        inside_words += [part for part in ctx.name_parts
                         if _UNSPACED.search(part) or len(part) >= 5]
        for ident in inside_words:
            start = lowered.find(ident)
            while start >= 0:
                mark(origin[start], origin[start + len(ident) - 1] + 1)
                start = lowered.find(ident, start + 1)
        for phrase in self._phrases:
            for m in phrase.finditer(text):
                mark(m.start(), m.end())
        for pattern in _PATTERNS:
            for m in pattern.finditer(text):
                if pattern is _PHONE and (sum(c.isdigit() for c in m.group()) < 7 or (
                        kind == "code" and m.group().isdigit())):
                    continue
                mark(m.start(), m.end())

        tokens = list(_TOKEN.finditer(text))
        skip_name = 0  # tokens still to remove after a title
        for index, m in enumerate(tokens):
            word = m.group()
            low = word.lower()
            drop = False
            if skip_name:
                if low in _GRADES or self._is_title(text, m):
                    drop = True
                elif word.isalpha():
                    drop = True
                    skip_name = 0
                    nxt = tokens[index + 1] if index + 1 < len(tokens) else None
                    if nxt is not None and _name_cased(nxt.group()):
                        mark(nxt.start(), nxt.end())  # "Dr Hans Huber": both parts go
                else:
                    skip_name = 0
            if not drop and kind != "coded" and self._is_title(text, m):
                drop, skip_name = True, 1
            if not drop:
                drop = self._identifying(low, word, ctx, coded, digits=kind != "code")
            if drop:
                mark(m.start(), m.end())
        return _rebuild(text, cut)

    def _identifying(self, low: str, word: str, ctx: ScrubContext, coded: bool, *,
                     digits: bool) -> bool:
        if low in ctx.identifiers or low in self.words:
            return True
        if low in ctx.name_parts and (not coded or len(low) >= 3):
            return True
        return digits and bool(_DIGITS4.search(word)) and not _B_VALUE.fullmatch(word)

    @staticmethod
    def _is_title(text: str, m: re.Match) -> bool:
        word = m.group()
        if word.lower() not in TITLES:
            return False
        dotted = m.end() < len(text) and text[m.end()] == "."
        # "MR", "MS", "DR" in capitals are modalities and diagnoses, "pd"/"mr" in lower case
        # parts of protocol names ("t2_pd_tse"): a title is capitalised ("Dr") or dotted.
        return dotted or (word[0].isupper() and word[1:].islower())


# Scripts written without spaces between words: CJK ideographs, Hiragana, Katakana (full and
# half width), Hangul, Thai.
_UNSPACED = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
                       "\uff66-\uff9f\uac00-\ud7af\u1100-\u11ff\u0e00-\u0e7f]")


def _lower(text: str) -> tuple[str, list[int]]:
    """``text`` in lower case, and for each of its characters the position in ``text`` it
    came from: a character whose lower case is longer ("İ" -> "i̇") would otherwise shift
    every position after it (a shifted cut leaves the identifier and cuts its neighbour)."""
    lowered, origin = [], []
    for index, char in enumerate(text):
        low = char.lower()
        lowered.append(low)
        origin.extend([index] * len(low))
    return "".join(lowered), origin


def _name_cased(word: str) -> bool:
    return len(word) > 1 and word[0].isupper() and word[1:].islower() and word.isalpha()


def _rebuild(text: str, cut: list[bool]) -> str:
    """The text without the cut characters, separators tidied where something was cut."""
    if not any(cut):
        return text
    out: list[str] = []
    last_cut = False
    for char, gone in zip(text, cut, strict=True):
        if gone:
            last_cut = True
            continue
        if last_cut and out and char in _SEPARATORS and out[-1] in _SEPARATORS:
            continue  # two separators meet where a token was cut out
        last_cut = False
        out.append(char)
    result = re.sub(r"\s{2,}", " ", "".join(out))
    return result.strip(_SEPARATORS)
