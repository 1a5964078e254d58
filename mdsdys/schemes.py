"""Label schemes as data: the paper's eight classes by default, others loaded from files."""

from __future__ import annotations

import json
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mdsdys.errors import SchemeError

# Keys the Review page binds to actions (accept, skip, undo, heatmap, x = can't assess), plus "c"
# and "r", which Streamlit reserves; a class hotkey must not take one of them.
ACTION_KEYS = frozenset({"a", "s", "u", "h", "x", "c", "r"})
CANT_ASSESS_KEY = "x"  # issue 17: a read that the cell cannot be assessed
# That read's code, reserved in every scheme, with the reason as its one tag. Such cells leave every
# count and every training set, and are counted per slide on their own.
UNASSESSABLE = "UNASSESSABLE"
UNASSESSABLE_REASONS = {"debris": "debris", "overlap": "overlapping cells", "out_of_focus": "out of focus",
                        "broken_cell": "broken cell"}
DIAGNOSTIC_LINEAGES = ("erythroid", "granulocytic", "megakaryocytic")
_PALETTE = (
    "#d62728", "#ff7f0e", "#1f77b4", "#17becf", "#2ca02c", "#bcbd22",
    "#9467bd", "#7f7f7f", "#e377c2", "#8c564b", "#393b79", "#637939",
)


@dataclass(frozen=True)
class LabelClass:
    """One class a reader can give a cell."""

    code: str
    name: str
    lineage: str
    dysplastic: bool | None  # None for classes with no normal/dysplastic split (blasts, others)
    hotkey: str
    color: str


@dataclass(frozen=True)
class LabelScheme:
    """A named set of classes plus the dysplasia feature tags readers may name per lineage."""

    name: str
    classes: tuple[LabelClass, ...]
    lineage_features: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""

    @property
    def codes(self) -> tuple[str, ...]:
        """Class codes in display order."""
        return tuple(c.code for c in self.classes)

    def get(self, code: str) -> LabelClass:
        """The class with this code; raises SchemeError for an unknown code."""
        for label_class in self.classes:
            if label_class.code == code:
                return label_class
        raise SchemeError(f"Class {code!r} is not in scheme {self.name!r}; use one of {', '.join(self.codes)}.")

    def features_for(self, code: str) -> tuple[str, ...]:
        """Dysplasia feature tags a reader may attach to a cell of this class."""
        return tuple(self.lineage_features.get(self.get(code).lineage, ()))


# Paper Table 1 names the dysplastic features per lineage (DOMAIN.md).
_PAPER_FEATURES = {
    "erythroid": ("nuclear budding", "megaloblastic change", "multinuclearity"),
    "granulocytic": ("hypogranulation", "nuclear hyposegmentation", "unusually large size"),
    "megakaryocytic": ("micromegakaryocyte", "nuclear hypolobation", "multinucleation"),
}
_PAPER_CLASSES = (
    ("EN", "normal erythroid", "erythroid", False),
    ("ED", "dysplastic erythroid", "erythroid", True),
    ("GN", "normal granulocytic", "granulocytic", False),
    ("GD", "dysplastic granulocytic", "granulocytic", True),
    ("MN", "normal megakaryocytic", "megakaryocytic", False),
    ("MD", "dysplastic megakaryocytic", "megakaryocytic", True),
    ("BL", "blast", "blast", None),
    ("OT", "others (lymphocytes, plasma cells, monocytes, debris)", "other", None),
)
DEFAULT_SCHEME_NAME = "mds8"
# Every page, outline and report reads a colour as #rrggbb (report.summary._hex_rgb), so only that is accepted.
_HEX_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")
# A scheme of 30 classes is ~5 kB; 256 kB and 32 levels leave room for any real one, and refuse
# files built to exhaust the parser (json and tomllib recurse per level: RecursionError at ~1000).
MAX_SCHEME_BYTES = 256 * 1024
MAX_SCHEME_DEPTH = 32


def default_scheme() -> LabelScheme:
    """The paper's eight classes (Lee et al. 2022, Table 2) with hotkeys 1-8."""
    classes = tuple(
        LabelClass(code, name, lineage, dysplastic, str(i + 1), _PALETTE[i])
        for i, (code, name, lineage, dysplastic) in enumerate(_PAPER_CLASSES)
    )
    return LabelScheme(
        DEFAULT_SCHEME_NAME, classes, dict(_PAPER_FEATURES),
        "Lee et al. 2022: normal/dysplastic erythroid, granulocytic, megakaryocytic; blasts; others.",
    )


def validate_scheme(scheme: LabelScheme) -> LabelScheme:
    """Check codes, hotkeys and lineages; raise SchemeError naming the first problem."""
    if not scheme.name.strip():
        raise SchemeError("A label scheme needs a non-empty name.")
    if len(scheme.classes) < 2:
        raise SchemeError(f"Scheme {scheme.name!r} needs at least two classes.")
    # Case-insensitive: folder matching on import and Streamlit's shortcuts ignore case.
    _require_unique([c.code for c in scheme.classes], "class code", scheme.name)
    if any(c.code == UNASSESSABLE for c in scheme.classes):
        raise SchemeError(f"Scheme {scheme.name!r}: the code {UNASSESSABLE} is kept for can't-assess reads; rename it.")
    _require_unique([c.hotkey for c in scheme.classes], "hotkey", scheme.name)
    for label_class in scheme.classes:
        _check_code(label_class.code, scheme.name)
        _check_color(label_class, scheme.name)
        if not label_class.lineage.strip():
            raise SchemeError(f"Class {label_class.code!r} in scheme {scheme.name!r} has no lineage; add one.")
        key = label_class.hotkey
        if len(key) != 1 or not key.isascii() or not key.isalnum() or key.lower() in ACTION_KEYS:
            raise SchemeError(
                f"Hotkey {key!r} of class {label_class.code!r} must be one letter or digit and not one "
                f"of the Review page's action keys ({', '.join(sorted(ACTION_KEYS))})."
            )
    lineages = {c.lineage for c in scheme.classes}
    unknown = set(scheme.lineage_features) - lineages
    if unknown:
        raise SchemeError(f"Scheme {scheme.name!r} lists features for lineages no class has: {sorted(unknown)}.")
    return scheme


def _require_unique(values: list[str], what: str, scheme_name: str) -> None:
    seen: dict[str, str] = {}
    for value in values:
        if value.casefold() in seen:
            first = seen[value.casefold()]
            twice = repr(value) if first == value else f"{first!r} and {value!r}"
            raise SchemeError(f"Scheme {scheme_name!r} uses the {what} {twice} twice (case is ignored); "
                              "each must be unique.")
        seen[value.casefold()] = value


def _check_code(code: str, scheme_name: str) -> None:
    """Refuse blank codes, control characters (the store joins codes with \\x1f) and path separators."""
    bad = [ch for ch in code if unicodedata.category(ch)[0] == "C" or ch in "/\\"]
    if not code.strip() or bad:
        raise SchemeError(
            f"Class code {code!r} in scheme {scheme_name!r} is blank or holds control characters or '/'; "
            "use letters, digits and simple punctuation (e.g. ED)."
        )


def _check_color(label_class: LabelClass, scheme_name: str) -> None:
    if not _HEX_COLOR.match(label_class.color):
        raise SchemeError(
            f"Colour {label_class.color!r} of class {label_class.code!r} in scheme {scheme_name!r} is not a hex "
            "colour; write it as #rrggbb, e.g. #d62728."
        )


def scheme_from_mapping(data: Mapping[str, object]) -> LabelScheme:
    """Build and validate a scheme from parsed JSON/TOML (see README, 'Label schemes')."""
    if not isinstance(data, Mapping):
        raise SchemeError("A scheme file must hold a table/object with 'name' and 'classes'.")
    raw_classes = data.get("classes")
    if not isinstance(raw_classes, list) or not raw_classes:
        raise SchemeError("A scheme file needs a non-empty 'classes' list.")
    classes = tuple(_class_from_mapping(raw, i) for i, raw in enumerate(raw_classes))
    features = data.get("lineage_features", {})
    if not isinstance(features, Mapping) or not all(isinstance(v, list) for v in features.values()):
        raise SchemeError("'lineage_features' must map each lineage to a list of feature names.")
    scheme = LabelScheme(
        str(data.get("name", "")), classes,
        {str(k): tuple(str(x) for x in v) for k, v in features.items()}, str(data.get("description", "")),
    )
    return validate_scheme(scheme)


def _class_from_mapping(raw: object, index: int) -> LabelClass:
    if not isinstance(raw, Mapping):
        raise SchemeError(f"Class #{index + 1} must be a table/object with code, name, lineage and hotkey.")
    missing = [key for key in ("code", "lineage", "hotkey") if not raw.get(key)]
    if missing:
        raise SchemeError(f"Class #{index + 1} ({raw.get('code', '?')}) is missing: {', '.join(missing)}.")
    dysplastic = raw.get("dysplastic")
    if dysplastic is not None and not isinstance(dysplastic, bool):
        raise SchemeError(f"Class {raw['code']!r}: 'dysplastic' must be true, false or absent.")
    return LabelClass(
        str(raw["code"]), str(raw.get("name", raw["code"])), str(raw["lineage"]), dysplastic,
        str(raw["hotkey"]), str(raw.get("color", _PALETTE[index % len(_PALETTE)])),
    )


def load_scheme_file(path: Path) -> LabelScheme:
    """Read a scheme from a .json or .toml file; raise SchemeError with the file name on any problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SchemeError(f"Cannot read scheme file {path}: {exc}") from exc
    return parse_scheme_bytes(data, path.name)


def scheme_to_mapping(scheme: LabelScheme) -> dict[str, object]:
    """The JSON-ready form that scheme_from_mapping reads back."""
    return {
        "name": scheme.name,
        "description": scheme.description,
        "classes": [dict(vars(c)) for c in scheme.classes],
        "lineage_features": {k: list(v) for k, v in scheme.lineage_features.items()},
    }


# Lineage guesses for folder names of common single-cell data sets (e.g. PBC, Acevedo 2020).
_LINEAGE_HINTS = {
    "erythro": "erythroid", "normoblast": "erythroid",
    "neutro": "granulocytic", "eosino": "granulocytic", "baso": "granulocytic", "ig": "granulocytic",
    "myelo": "granulocytic", "band": "granulocytic", "seg": "granulocytic",
    "megakaryo": "megakaryocytic", "platelet": "megakaryocytic",
    "blast": "blast",
}
_HOTKEYS = "1234567890bdefgijklmnopqtvwyz"  # no action key (ACTION_KEYS)


def scheme_from_folders(name: str, folder_names: Iterable[str]) -> LabelScheme:
    """A scheme whose classes are the given folder names, lineages guessed from common cell names."""
    codes = sorted(set(folder_names))
    if len(codes) > len(_HOTKEYS):
        raise SchemeError(f"{len(codes)} class folders is more than the {len(_HOTKEYS)} hotkeys available.")
    classes = tuple(
        LabelClass(code, code, _guess_lineage(code), None, _HOTKEYS[i], _PALETTE[i % len(_PALETTE)])
        for i, code in enumerate(codes)
    )
    return validate_scheme(LabelScheme(name, classes, {}, f"Created from the folder names of an import ({name})."))


def _guess_lineage(folder: str) -> str:
    lowered = folder.lower()
    if lowered == "ig":
        return "granulocytic"
    for hint, lineage in _LINEAGE_HINTS.items():
        if hint != "ig" and hint in lowered:
            return lineage
    return "other"


def parse_scheme_bytes(data: bytes, name: str) -> LabelScheme:
    """Parse an uploaded .json or .toml scheme file."""
    if len(data) > MAX_SCHEME_BYTES:
        raise SchemeError(f"Scheme file {name} is {len(data) / 1024:.0f} kB; the limit is "
                          f"{MAX_SCHEME_BYTES // 1024} kB. A scheme lists its classes; remove anything else.")
    try:
        text = data.decode("utf-8")
        _check_depth(text, name)
        parsed = tomllib.loads(text) if name.lower().endswith(".toml") else json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SchemeError(f"Cannot read scheme file {name}: {exc}") from exc
    except RecursionError as exc:  # a backstop: _check_depth should have refused the file first
        raise SchemeError(f"Scheme file {name} nests too deeply to read.") from exc
    try:
        return scheme_from_mapping(parsed)
    except SchemeError as exc:
        raise SchemeError(f"{name}: {exc}") from exc


def _check_depth(text: str, name: str) -> None:
    """Refuse text whose brackets nest deeper than MAX_SCHEME_DEPTH, before any parser recurses on it.

    Counts [ and { outside quoted strings and # comments. It is a cheap approximation (TOML's
    triple-quoted strings can fool it), so parse_scheme_bytes also catches RecursionError.
    """
    depth, quote, comment, after_backslash = 0, "", False, False
    for ch in text:
        if comment:
            comment = ch != "\n"
        elif quote:
            if ch == quote and not after_backslash:
                quote = ""
            after_backslash = quote == '"' and ch == "\\" and not after_backslash
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            comment = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_SCHEME_DEPTH:
                raise SchemeError(f"Scheme file {name} nests more than {MAX_SCHEME_DEPTH} levels deep; a scheme "
                                  "needs two (a list of classes, each a table). Check the file.")
        elif ch in "]}":
            depth = max(depth - 1, 0)
