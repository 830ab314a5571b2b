"""OpenVEX documents: parsing, purl matching and the statement that wins.

A VEX document says, per vulnerability and product, whether the product is affected. The
security-bulletin verdicts consult it to suppress or confirm findings for a running image.
This module is pure: it takes the document text (from a ConfigMap, a file, a test) and plain
purls, and never talks to Kubernetes.

What is read follows go-vex, the reference implementation that vexctl is built on: a document
go-vex reads is read here too, with a warning for each deviation from OpenVEX v0.2.0 that names
its JSON path (``Document.warnings``): fields the specification does not define (vexctl's own
examples carry a ``statement`` field), missing required fields (go-vex's test data has no
document ``version`` or ``timestamp``), a wrong value in a field that does not change what a
statement says (a string ``version``), and OpenVEX v0.0.1 documents, converted as go-vex
converts them. Refused is only what would change the meaning or cannot be read safely: input
that is not JSON, too large or too deep, an unknown ``@context`` version, an unknown or missing
status, a malformed vulnerability, product list or timestamp, and a product purl that does not
parse. A consumer that refuses the vendor's document for a spelling protects no one.

Document ``@id`` is never used as a key: real publishers reuse one ``@id`` for different documents.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal, get_args

import pydantic
from packageurl import PackageURL, normalize_qualifiers

#: A ConfigMap value cannot be bigger anyway (etcd's object limit is about 1.5 MiB for the lot).
MAX_DOCUMENT_BYTES = 1_048_576

#: Deeper JSON than this is rejected before validation; a real OpenVEX document is about 8 deep.
MAX_DEPTH = 64

#: The JSON-LD context of OpenVEX v0.2.0, the format the models describe.
CONTEXT = "https://openvex.dev/ns/v0.2.0"

#: Contexts of OpenVEX v0.0.1 (a context without a version means v0.0.1), whose statements
#: name the vulnerability and the products as plain strings; go-vex converts them to v0.2.0.
CONTEXTS_V001 = ("https://openvex.dev/ns", "https://openvex.dev/ns/v0.0.1")

#: The time of statements that have no timestamp in a document that has none: go-vex's zero
#: time, so that they count as the oldest.
EARLIEST = datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)

#: Distinct warnings kept per document; the rest are counted. A hostile document may hold
#: thousands of unknown fields, and the warnings end up in a condition message.
MAX_WARNINGS = 20

Status = Literal["not_affected", "affected", "fixed", "under_investigation"]
Justification = Literal[
    "component_not_present",
    "vulnerable_code_not_present",
    "vulnerable_code_not_in_execute_path",
    "vulnerable_code_cannot_be_controlled_by_adversary",
    "inline_mitigations_already_exist",
]
STATUSES: tuple[str, ...] = get_args(Status)
JUSTIFICATIONS: tuple[str, ...] = get_args(Justification)

_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[A-Za-z0-9=_-]+$")
_SIMPLE_KEY = re.compile(r"^[@A-Za-z_][A-Za-z0-9_@-]*$")


class VexError(ValueError):
    """A VEX document cannot be used.

    The message names the document (its source), the JSON path of the problem and what to fix,
    because it ends up verbatim in a bulletin condition that a person has to act on.
    """


def _shown(text: str, limit: int = 120) -> str:
    """``text`` quoted for a message, shortened: a hostile document may hold huge strings."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


class Instant(datetime.datetime):
    """An RFC 3339 instant that keeps its nanoseconds: ``datetime`` holds microseconds only,
    and two statements 800 ns apart must not tie (go-vex orders by ``time.Time``, in ns)."""

    #: Nanoseconds within the second, 0-999,999,999.
    nanosecond: int = 0


_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
                      r"(?:[Zz]|([+-])(\d{2}):(\d{2}))$")
_NO_SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?:[Zz]|[+-]\d{2}:?\d{2})?$")
_COLONLESS_OFFSET = re.compile(r"[+-]\d{4}$")
_EXAMPLE = "such as 2026-06-02T12:00:00Z"


def _rfc3339(value: Any) -> Instant:
    """Strict RFC 3339 ``date-time`` (section 5.6), as the OpenVEX schema's format requires.

    Refused: numbers (pydantic would read them as Unix time), a missing seconds field, an
    offset without a colon (``+0100``), a space for ``T`` and a missing offset. Accepted: a
    leap second ``:60``, read as the last nanosecond before it, since Python cannot hold it;
    ordering is kept except against the same leap second itself.
    """
    if isinstance(value, datetime.datetime):  # Python callers, e.g. model_copy
        if value.tzinfo is None:
            raise ValueError("a timestamp needs a UTC offset")
        instant = Instant(value.year, value.month, value.day, value.hour, value.minute,
                          value.second, value.microsecond, tzinfo=value.tzinfo)
        instant.nanosecond = getattr(value, "nanosecond", value.microsecond * 1000)
        return instant
    if not isinstance(value, str):
        kind = "a boolean" if isinstance(value, bool) else (
            "a number" if isinstance(value, int | float) else f"a {type(value).__name__}")
        raise ValueError(f"expected an RFC 3339 date-time string {_EXAMPLE}, got {kind} "
                         f"({json.dumps(value)[:40]})")
    match = _RFC3339.match(value)
    if match is None:
        hint = "an offset Z or +hh:mm"
        if _NO_SECONDS.match(value):
            hint = "seconds (hh:mm:ss)"
        elif _COLONLESS_OFFSET.search(value):
            hint = "a colon in the offset (+01:00, not +0100)"
        elif " " in value:
            hint = "a T between date and time"
        raise ValueError(f"{_shown(value, 40)} is not an RFC 3339 date-time {_EXAMPLE}: it "
                         f"needs {hint}")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction = (match[7] or "")[:9].ljust(9, "0")
    nanosecond = int(fraction)
    if second == 60:
        second, nanosecond = 59, 999_999_999
    offset = datetime.timedelta()
    if match[8]:
        if int(match[9]) > 23 or int(match[10]) > 59:
            raise ValueError(f"{_shown(value, 40)} has an offset out of range")
        offset = datetime.timedelta(hours=int(match[9]), minutes=int(match[10]))
        offset = -offset if match[8] == "-" else offset
    try:
        instant = Instant(year, month, day, hour, minute, second, nanosecond // 1000,
                          tzinfo=datetime.timezone(offset))
    except ValueError as error:
        raise ValueError(f"{_shown(value, 40)} is not a date-time: {error}") from error
    instant.nanosecond = nanosecond
    return instant


def _integer(value: Any) -> int:
    """An integer of at least 1, as JSON Schema reads integers: ``1.0`` and ``1e30`` count,
    ``"1"`` and ``true`` do not (pydantic's lax mode would take both)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "a boolean" if isinstance(value, bool) else (
            "a string" if isinstance(value, str) else f"a {type(value).__name__}")
        raise ValueError(f"expected an integer of at least 1, got {kind} "
                         f"({json.dumps(value)[:40]})")
    if value < 1:
        raise ValueError(f"expected an integer of at least 1, got {value}")
    return value


def _unique_qualifiers(text: str | None) -> str | None:
    """The purl specification allows each qualifier key once; parsers keep one of the
    repeated values silently, so which build a statement names would depend on the parser."""
    if text and text[:4].lower() == "pkg:" and "?" in text:
        query = text.split("#", 1)[0].split("?", 1)[1]
        seen: set[str] = set()
        for part in query.split("&"):
            key = urllib.parse.unquote(part.split("=", 1)[0]).lower()
            if key in seen:
                raise ValueError(f"purl {_shown(text, 80)} repeats the qualifier {key!r}; each "
                                 "qualifier key may appear once")
            seen.add(key)
    return text


#: An integer version of at least 1, as JSON Schema reads integers.
Version = Annotated[int, pydantic.PlainValidator(_integer)]

#: An RFC 3339 date-time; a UTC offset is required so that statements order unambiguously.
Timestamp = Annotated[Instant, pydantic.PlainValidator(_rfc3339)]

#: A product identifier; when it is a purl, its qualifier keys must be unique.
PurlText = Annotated[str, pydantic.AfterValidator(_unique_qualifiers)]


class _Model(pydantic.BaseModel):
    # Unknown fields are validation errors here so that parse_document sees them (with their
    # path) and reports each as a warning before it drops it: a misspelt "justifcation" must
    # not pass silently. populate_by_name lets Python code use field names instead of "@id".
    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Vulnerability(_Model):
    #: Required by the schema; without it (go-vex reads such statements) only ``@id`` and the
    #: aliases can match.
    name: str = ""
    id: str | None = pydantic.Field(None, alias="@id")
    description: str | None = None
    aliases: tuple[str, ...] = ()

    def matches(self, vulnerability: str) -> bool:
        """True for the name, the ``@id`` or any alias; case does not matter (cve- = CVE-)."""
        wanted = vulnerability.strip().casefold()
        names = (self.name, self.id or "", *self.aliases)
        return any(name.strip().casefold() == wanted for name in names if name)


class Identifiers(_Model):
    purl: PurlText | None = None
    cpe22: str | None = None
    cpe23: str | None = None


class Subcomponent(_Model):
    """A component named by ``@id`` (an IRI; purls qualify) and/or ``identifiers``."""

    id: PurlText | None = pydantic.Field(None, alias="@id")
    identifiers: Identifiers | None = None
    #: Algorithm (``sha-256``, ...) to hash value; kept but not used for matching.
    hashes: dict[str, str] = pydantic.Field(default_factory=dict)


class Product(Subcomponent):
    """A product; with ``subcomponents`` the statement is about those parts of it only."""

    subcomponents: tuple[Subcomponent, ...] = ()


class Statement(_Model):
    #: Required; a statement without one (go-vex reads it) matches no vulnerability.
    vulnerability: Vulnerability = Vulnerability()
    status: Status
    products: tuple[Product, ...] = ()
    #: The schema wants a justification or an impact_statement on not_affected, and an
    #: action_statement on affected; go-vex reads statements without, and so does this module
    #: (with a warning): the status is what the statement says.
    justification: Justification | None = None
    impact_statement: str | None = None
    action_statement: str | None = None
    action_statement_timestamp: Timestamp | None = None
    status_notes: str | None = None
    #: None means the document's timestamp (OpenVEX inheritance).
    timestamp: Timestamp | None = None
    last_updated: Timestamp | None = None
    id: str | None = pydantic.Field(None, alias="@id")
    version: Version | None = None
    supplier: str | None = None


class Document(_Model):
    #: Checked by parse_document before validation: v0.2.0, or v0.0.1 converted to it.
    context: str = pydantic.Field(alias="@context")
    #: Not unique in practice; never use it as a key. Required by the schema, like author,
    #: timestamp, version and statements; go-vex reads documents without them.
    id: str = pydantic.Field("", alias="@id")
    author: str = ""
    #: None: statements without their own timestamp count as the oldest (go-vex's zero time).
    timestamp: Timestamp | None = None
    version: Version | None = None
    #: The schema wants at least one; Flux publishes an empty list for a fresh release line.
    statements: tuple[Statement, ...] = ()
    role: str | None = None
    last_updated: Timestamp | None = None
    tooling: str | None = None
    #: Removed from the spec in 2023-06 but still written by go-vex; accepted and ignored.
    supplier: str | None = None
    _warnings: tuple[str, ...] = pydantic.PrivateAttr(default=())

    @property
    def warnings(self) -> tuple[str, ...]:
        """What parse_document read leniently, each as ``<JSON path>: <what and how>``."""
        return self._warnings

    def statement_timestamp(self, statement: Statement) -> datetime.datetime:
        """The statement's own timestamp, or the document's when it has none (or EARLIEST)."""
        return statement.timestamp or self.timestamp or EARLIEST


# --- parsing -------------------------------------------------------------------------------

#: A position in the JSON: keys and list indexes, as pydantic reports error locations.
Location = tuple[int | str, ...]


def _path(location: Iterable[int | str]) -> str:
    """``statements[3].products[0].@id`` from a pydantic location or a JSON walk."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _SIMPLE_KEY.match(part) and len(part) <= 60:
            text += f".{part}" if text else part
        else:  # a key a hostile document chose: quoted and shortened
            text += f"[{json.dumps(part if len(part) <= 60 else part[:57] + '...')}]"
    return text or "(root)"


def _pattern(location: Location) -> tuple[str, ...]:
    return tuple("*" if isinstance(part, int) else part for part in location)


_KIND_MESSAGES = {
    "model_type": "expected a JSON object",
    "model_attributes_type": "expected a JSON object",
    "dict_type": "expected a JSON object",
    "list_type": "expected a JSON array",
    "tuple_type": "expected a JSON array",
    "string_type": "expected a string",
    "missing": "required field is missing",
    "extra_forbidden": "unknown field; OpenVEX v0.2.0 does not define it (check the spelling)",
}


def _explain(error: Any) -> str:
    message = str(_KIND_MESSAGES.get(error["type"], error["msg"]))
    message = message.removeprefix("Value error, ")
    value = error.get("input")
    if error["type"] not in ("missing", "extra_forbidden", "value_error") and (
            value is None or isinstance(value, str | int | float | bool)):
        shown = json.dumps(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        message += f" (got {shown})"
    return message


def _describe(error: Any) -> str:
    return f"{_path(error['loc'])}: {_explain(error)}"


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _too_deep_at(text: str) -> int:
    """Index of the first bracket deeper than MAX_DEPTH (strings skipped), or -1."""
    depth, in_string, escaped = 0, False, False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return index
        elif char in "]}":
            depth -= 1
    return -1


def _check_depth(data: Any, source: str) -> None:
    """Iterative, so that depth is bounded before pydantic recurses into the data."""
    stack: list[tuple[Any, int, Location]] = [(data, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        children: Iterable[tuple[int | str, Any]]
        if isinstance(value, dict):
            children = value.items()
        elif isinstance(value, list):
            children = enumerate(value)
        else:
            continue
        if depth > MAX_DEPTH:
            where = _path(path)
            if len(where) > 120:
                where = "..." + where[-117:]
            raise VexError(f"{source}: {where}: nesting deeper than {MAX_DEPTH} levels; "
                           "an OpenVEX document needs fewer than 10, so this is not one")
        stack.extend((child, depth + 1, (*path, key)) for key, child in children)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _refuse(source: str, problems: Sequence[str]) -> VexError:
    shown = "; ".join(problems[:10])
    if len(problems) > 10:
        shown += f"; and {len(problems) - 10} more"
    return VexError(f"{source}: {shown}")


def _load(data: str | bytes, source: str) -> dict[str, Any]:
    """The JSON object, within the size and depth limits; VexError otherwise."""
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        raise VexError(f"{source}: the document is {size} bytes, over the limit of "
                       f"{MAX_DOCUMENT_BYTES} bytes (1 MiB, the most a ConfigMap holds); split "
                       "it into several documents")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise VexError(f"{source}: not UTF-8 (byte {error.start}: {error.reason}); save the "
                           "document as UTF-8 JSON") from error
    else:
        text = data
    text = text.removeprefix("\ufeff")
    try:
        loaded = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        truncated = error.pos >= len(text.rstrip())
        hint = "; the document looks truncated" if truncated else ""
        raise VexError(f"{source}: not valid JSON at line {error.lineno}, column {error.colno}: "
                       f"{error.msg}{hint}") from error
    except RecursionError as error:
        index = _too_deep_at(text)
        where = " at line {}, column {}".format(*_position(text, index)) if index >= 0 else ""
        raise VexError(f"{source}: JSON nested deeper than {MAX_DEPTH} levels{where}; an OpenVEX "
                       "document needs fewer than 10, so this is not one") from error
    except ValueError as error:  # NaN / Infinity
        raise VexError(f"{source}: not valid JSON: {error}") from error
    if not isinstance(loaded, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(loaded), "a number")
        raise VexError(f"{source}: (root): expected a JSON object (an OpenVEX document), "
                       f"got {kind}")
    _check_depth(loaded, source)
    return loaded


def _format_version(loaded: dict[str, Any], source: str) -> Literal["v0.2.0", "v0.0.1"]:
    """Which OpenVEX format ``@context`` names; as go-vex's Open, refuse any other."""
    context = loaded.get("@context")
    if not isinstance(context, str):
        got = "it is missing" if context is None and "@context" not in loaded else \
            f"got {json.dumps(context)[:60]}"
        raise VexError(f"{source}: @context: expected the OpenVEX context {CONTEXT} ({got})")
    trimmed = context.strip().rstrip("/")
    if trimmed == CONTEXT:
        return "v0.2.0"
    if trimmed in CONTEXTS_V001:
        return "v0.0.1"
    if trimmed.startswith(CONTEXTS_V001[0] + "/"):
        raise VexError(f"{source}: @context: {_shown(context, 80)} names an OpenVEX version "
                       f"this operator cannot read; it reads {CONTEXT} and v0.0.1")
    raise VexError(f"{source}: @context: {_shown(context, 80)} is not an OpenVEX context; "
                   f"expected {CONTEXT}")


#: Fields of an OpenVEX v0.0.1 document and statement (go-vex's compatibility reader).
_V001_DOCUMENT = frozenset({"@context", "@id", "author", "role", "timestamp", "version",
                            "tooling", "supplier", "statements"})
_V001_STATEMENT = frozenset({"vulnerability", "vuln_description", "timestamp", "products",
                             "subcomponents", "status", "status_notes", "justification",
                             "impact_statement", "action_statement",
                             "action_statement_timestamp"})


def _strings(value: Any, where: Location, problems: list[str]) -> list[str]:
    """A v0.0.1 list of plain strings (products, subcomponents); null is none, as in go-vex."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.append(f"{_path(where)}: expected a JSON array of strings, as OpenVEX v0.0.1 "
                        f"names products (got {json.dumps(value)[:60]})")
        return []
    return value


def _from_v001(loaded: dict[str, Any], source: str,
               found: list[tuple[Location, str]]) -> dict[str, Any]:
    """An OpenVEX v0.0.1 document as v0.2.0, converted as go-vex converts it: the
    vulnerability string becomes its name, each product string a product ``@id``, and the
    statement's subcomponents go to every product. Problems are reported at their v0.0.1
    path."""
    found.append((("@context",), f"{_shown(loaded['@context'], 80)} is OpenVEX v0.0.1; read "
                  f"as {CONTEXT}, as go-vex reads it"))
    problems: list[str] = []
    converted = {key: value for key, value in loaded.items() if key in _V001_DOCUMENT}
    found += [((key,), "unknown field; OpenVEX v0.0.1 does not define it; ignored")
              for key in loaded if key not in _V001_DOCUMENT]
    version = loaded.get("version")
    if isinstance(version, str) and version.strip().isdigit():  # a string in v0.0.1
        converted["version"] = int(version)
    statements = loaded.get("statements")
    if isinstance(statements, list):
        converted["statements"] = []
        for index, item in enumerate(statements):
            if not isinstance(item, dict):
                converted["statements"].append(item)  # refused with its path below
                continue
            where: Location = ("statements", index)
            found += [((*where, key), "unknown field; OpenVEX v0.0.1 does not define it; "
                       "ignored") for key in item if key not in _V001_STATEMENT]
            statement = {key: value for key, value in item.items() if key in _V001_STATEMENT
                         and key not in ("vulnerability", "vuln_description", "products",
                                         "subcomponents")}
            name, description = item.get("vulnerability"), item.get("vuln_description")
            if name is not None and not isinstance(name, str):
                problems.append(f"{_path((*where, 'vulnerability'))}: expected a string, as "
                                f"OpenVEX v0.0.1 names vulnerabilities (got "
                                f"{json.dumps(name)[:60]}); a v0.2.0 document needs the "
                                f"@context {CONTEXT}")
            elif name is not None:
                statement["vulnerability"] = {"name": name, **(
                    {"description": description} if description is not None else {})}
            subcomponents = [{"@id": text} for text in _strings(
                item.get("subcomponents", []), (*where, "subcomponents"), problems) if text]
            products = _strings(item.get("products", []), (*where, "products"), problems)
            for number, text in enumerate(products):
                if text.startswith("pkg:") and (problem := _purl_problem(text)) is not None:
                    problems.append(f"{_path((*where, 'products', number))}: {problem}")
            if item.get("products") is not None:
                statement["products"] = [{"@id": text, **(
                    {"subcomponents": subcomponents} if subcomponents else {})}
                    for text in products]
            converted["statements"].append(statement)
    if problems:
        raise _refuse(source, problems)
    return converted


#: Fields whose value does not change what a statement says (which vulnerability, which
#: products, which status, when): a wrong value there is ignored with a warning, as go-vex
#: ignores the fields it does not read. ``*`` stands for a list position.
_COMPONENTS = (("statements", "*", "products", "*"),
               ("statements", "*", "products", "*", "subcomponents", "*"))
_INCIDENTAL = frozenset({
    ("@id",), ("author",), ("role",), ("version",), ("last_updated",), ("tooling",),
    ("supplier",),
    *(("statements", "*", field) for field in (
        "@id", "version", "last_updated", "supplier", "status_notes", "justification",
        "impact_statement", "action_statement", "action_statement_timestamp")),
    ("statements", "*", "vulnerability", "description"),
    *((*component, "hashes") for component in _COMPONENTS),
    *((*component, "identifiers", kind) for component in _COMPONENTS
      for kind in ("cpe22", "cpe23")),
})


def _tolerated(error: Any) -> tuple[Location, str] | None:
    """What to drop for a validation error that does not touch the meaning, and the
    warning; None when the error does (then the document is refused)."""
    location = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        return location, "unknown field; OpenVEX v0.2.0 does not define it; ignored"
    pattern = _pattern(location)
    for end in range(1, len(location) + 1):
        if pattern[:end] in _INCIDENTAL:
            what = _explain(error) if end == len(location) else \
                f"{_path(location[end:])}: {_explain(error)}"
            return location[:end], f"{what}; ignored"
    if error["type"] != "missing" and error.get("input") is None and location and \
            isinstance(location[-1], str):
        return location, "null; read as absent"
    return None


def _drop(data: Any, location: Location) -> None:
    """Remove the field at ``location`` (already gone with its parent: nothing to do)."""
    for part in location[:-1]:
        if not isinstance(data, dict | list):
            return
        try:
            data = data[part]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(data, dict):
        data.pop(location[-1], None)


def _validate(loaded: dict[str, Any], source: str,
              found: list[tuple[Location, str]]) -> Document:
    """The document, with what does not change its meaning dropped and reported in
    ``found``; VexError listing what does."""
    try:
        return Document.model_validate(loaded)
    except pydantic.ValidationError as error:
        errors = error.errors()
    fatal, dropped, nulled = [], [], set()
    for item in errors:
        tolerated = _tolerated(item)
        if tolerated is None:
            fatal.append(_describe(item))
        else:
            dropped.append(tolerated)
            if tolerated[1].startswith("null"):
                nulled.add(tolerated[0])
    if fatal:
        raise _refuse(source, fatal)
    found += dropped
    for location, _ in dropped:
        _drop(loaded, location)
    try:
        return Document.model_validate(loaded)
    except pydantic.ValidationError as again:  # a required field that was null
        raise _refuse(source, [
            f"{_path(item['loc'])}: null; it needs a value" if tuple(item["loc"]) in nulled
            else _describe(item) for item in again.errors()]) from again


def _gaps(document: Document) -> list[tuple[Location, str]]:
    """Where the document leaves out what OpenVEX v0.2.0 requires, and how it is read."""
    found: list[tuple[Location, str]] = []
    missing = "required field is missing"
    for name, alias, reading in (("id", "@id", ""), ("author", "author", ""),
                                 ("timestamp", "timestamp", "; statements without their own "
                                  "timestamp count as the oldest"),
                                 ("version", "version", ""),
                                 ("statements", "statements", "; read as no statements")):
        if name not in document.model_fields_set:
            found.append(((alias,), missing + reading))
    for index, statement in enumerate(document.statements):
        where: Location = ("statements", index)
        vulnerability = statement.vulnerability
        if "vulnerability" not in statement.model_fields_set:
            found.append(((*where, "vulnerability"), missing + "; the statement matches no "
                          "vulnerability"))
        elif "name" not in vulnerability.model_fields_set:
            matched = "it matches by @id and aliases only" if (
                vulnerability.id or vulnerability.aliases) else "it matches no vulnerability"
            found.append(((*where, "vulnerability", "name"), f"{missing}; {matched}"))
        if statement.status == "not_affected" and statement.justification is None and \
                statement.impact_statement is None:
            found.append((where, "a not_affected statement needs a justification (one of "
                          f"{', '.join(JUSTIFICATIONS)}) or an impact_statement; read as "
                          "not_affected without one"))
        if statement.status == "affected" and statement.action_statement is None:
            found.append((where, "an affected statement needs an action_statement saying "
                          "what to do; read as affected"))
        for number, product in enumerate(statement.products):
            if product.id is None and product.identifiers is None:
                found.append(((*where, "products", number), "names no product (neither @id "
                              "nor identifiers), so it matches nothing"))
    return found


def _grouped(found: Sequence[tuple[Location, str]]) -> tuple[str, ...]:
    """One line per kind of warning, at its first path: ``statements[0].statement (and 4
    more like it): ...``; at most MAX_WARNINGS lines."""
    groups: dict[tuple[tuple[str, ...], str], list[Location]] = {}
    for location, message in found:
        groups.setdefault((_pattern(location), message), []).append(location)
    lines = []
    for (_, message), locations in groups.items():
        more = f" (and {len(locations) - 1} more like it)" if len(locations) > 1 else ""
        lines.append(f"{_path(locations[0])}{more}: {message}")
    if len(lines) > MAX_WARNINGS:
        lines[MAX_WARNINGS:] = [f"and {len(lines) - MAX_WARNINGS} more kinds of warning"]
    return tuple(lines)


def parse_document(data: str | bytes, source: str) -> Document:
    """Parse one OpenVEX document: v0.2.0, or v0.0.1 converted to it.

    ``source`` names where it came from (``ConfigMap ns/name key k``) and starts every error
    message. What go-vex reads is read, with ``Document.warnings`` naming each deviation
    from OpenVEX v0.2.0 by its JSON path. Raises VexError for input that is oversized, not
    JSON or too deeply nested, and for what would change the meaning of a statement (see the
    module docstring).
    """
    loaded = _load(data, source)
    found: list[tuple[Location, str]] = []
    if _format_version(loaded, source) == "v0.0.1":
        loaded = _from_v001(loaded, source, found)
    document = _validate(loaded, source, found)
    reported = {location for location, _ in found}  # a null already said "read as absent"
    found += [gap for gap in _gaps(document) if gap[0] not in reported]
    unparseable = [f"{where}: {problem}" for where, problem in _purl_problems(document)]
    if unparseable:
        raise _refuse(source, unparseable)
    document._warnings = _grouped(found)
    return document


# --- purls ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _parse_purl(text: str | None) -> PackageURL | None:
    """The purl, or None. Cached: real documents name the same few products in statement
    after statement, and parsing, checking and indexing a document each read them."""
    if not text or not text.startswith("pkg:"):
        return None
    try:
        return PackageURL.from_string(text)
    except ValueError:
        return None


def product_purls(product: Subcomponent) -> list[PackageURL]:
    """The purls naming a product: its ``@id`` when that is a purl, and ``identifiers.purl``.

    Strings that are not valid purls are skipped (see ``product_problems``); CPEs and hashes
    are not used for matching.
    """
    purls: list[PackageURL] = []
    texts = (product.id, product.identifiers.purl if product.identifiers else None)
    for text in texts:
        purl = _parse_purl(text)
        if purl is not None and purl not in purls:
            purls.append(purl)
    return purls


def _unquote(value: str | None) -> str | None:
    # packageurl decodes parsed strings but keeps constructor arguments as given, so
    # "sha256%3Aab" and "sha256:ab" only compare equal after decoding both.
    return urllib.parse.unquote(value) if value else None


def _qualifiers(purl: PackageURL) -> dict[str, str]:
    raw = purl.qualifiers
    if not isinstance(raw, dict):  # constructors normalise to a dict; be safe with a string
        raw = normalize_qualifiers(raw, encode=False) or {}
    return {key.lower(): urllib.parse.unquote(str(value)) for key, value in raw.items()}


def _version(purl: PackageURL) -> str | None:
    version = _unquote(purl.version)
    # OCI versions are digests, whose hex is case-insensitive.
    return version.lower() if version and purl.type == "oci" else version


def purl_matches(statement_purl: PackageURL, candidate: PackageURL) -> bool:
    """Whether a statement's product purl covers the candidate (e.g. a running image).

    Same type, namespace and name. A statement without a version covers every version; with
    one, the candidate must have that version. Every qualifier in the statement must be on the
    candidate with the same value; extra candidate qualifiers are fine. A statement subpath
    must be the candidate's. Version ranges (``vers:``) are not supported by OpenVEX.
    """
    if (statement_purl.type.lower(), _unquote(statement_purl.namespace),
            _unquote(statement_purl.name)) != (
            candidate.type.lower(), _unquote(candidate.namespace), _unquote(candidate.name)):
        return False
    wanted_version = _version(statement_purl)
    if wanted_version is not None and wanted_version != _version(candidate):
        return False
    candidate_qualifiers = _qualifiers(candidate)
    if any(candidate_qualifiers.get(key) != value
           for key, value in _qualifiers(statement_purl).items()):
        return False
    wanted_subpath = _unquote(statement_purl.subpath)
    return wanted_subpath is None or wanted_subpath.strip("/") == (
        _unquote(candidate.subpath) or "").strip("/")


def image_purl(name: str, digest: str | None = None, repository_url: str | None = None,
               tag: str | None = None) -> PackageURL:
    """``pkg:oci/<name>@<digest>?repository_url=...&tag=...`` for a container image.

    ``name`` is a repository (``ghcr.io/fluxcd/source-controller`` or ``source-controller``);
    the purl name is its last path segment in lower case, as the purl ``oci`` type requires.
    Tags and digests go in their own arguments; ValueError when ``name`` carries one.
    """
    segment = name.strip().rstrip("/").rsplit("/", 1)[-1]
    if not segment:
        raise ValueError(f"image name {name!r} is empty")
    if "@" in segment or ":" in segment:
        raise ValueError(f"image name {name!r} includes a tag or digest; pass them as tag= and "
                         "digest=")
    version = None
    if digest:
        version = urllib.parse.unquote(digest.strip())
        if not _DIGEST.match(version):
            raise ValueError(f"digest {digest!r} is not of the form sha256:<hex>")
        version = version.lower()
    qualifiers = {key: value for key, value in
                  (("repository_url", repository_url), ("tag", tag)) if value}
    return PackageURL(type="oci", name=segment.lower(), version=version,
                      qualifiers=qualifiers or None)


# --- the effective statement ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Effective:
    """The statement that decides a (vulnerability, product) pair, with where it came from."""

    status: Status
    justification: Justification | None
    impact_statement: str | None
    #: The statement's timestamp, or its document's when it has none.
    timestamp: datetime.datetime
    #: For messages only: not unique across documents.
    document_id: str
    statement_index: int
    #: Position of the document in the sequence given to effective_statement.
    document_index: int | None = None
    action_statement: str | None = None
    #: The matching product purl carried a version (a digest for images), so the statement is
    #: about this exact build rather than every build of the name.
    digest_specific: bool = False


def _matching_purls(statement: Statement, candidate: PackageURL) -> list[PackageURL]:
    """Product purls of the statement that cover the candidate.

    A product with subcomponents is about those subcomponents inside it (a package in an
    image), not the product as a whole, so it never matches: suppressing a CVE for all of
    ``pkg:oci/trivy`` because it was assessed for ``pkg:apk/alpine/git`` inside would be wrong.
    """
    return [purl for product in statement.products if not product.subcomponents
            for purl in product_purls(product) if purl_matches(purl, candidate)]


def _instant(moment: datetime.datetime) -> tuple[int, int]:
    """A UTC ordering key in integers, to the nanosecond: comparing aware datetimes near year
    1 or 9999 overflows, and datetime drops what is below a microsecond."""
    offset = moment.utcoffset() or datetime.timedelta()
    seconds = (moment.toordinal() * 86400 + moment.hour * 3600 + moment.minute * 60
               + moment.second - int(offset.total_seconds()))
    return seconds, getattr(moment, "nanosecond", moment.microsecond * 1000)


#: (vulnerability name, casefolded) and a purl's (type, namespace, name), as purl_matches and
#: Vulnerability.matches compare them.
IndexKey = tuple[str, tuple[str, str | None, str | None]]


def _purl_name(purl: PackageURL) -> tuple[str, str | None, str | None]:
    return purl.type.lower(), _unquote(purl.namespace), _unquote(purl.name)


@dataclasses.dataclass(frozen=True)
class IndexedDocument:
    """A document's statements indexed by vulnerability and product name.

    A real-size document holds thousands of statements and a verdict asks about one CVE and
    one image: the index gives the few statements that can match, in document order, and
    effective_statement checks them exactly as it checks every statement of a plain document.
    Only the statements the index names are kept, by their position in the document: with
    ``purl_types``, those about products of these purl types. Build it with index_document,
    once per document text.
    """

    id: str
    timestamp: datetime.datetime | None
    statements: Mapping[int, Statement]
    by_key: Mapping[IndexKey, tuple[int, ...]]
    #: None: every type.
    purl_types: frozenset[str] | None = None

    def candidates(self, vulnerability: str, candidate: PackageURL) -> tuple[int, ...]:
        """Positions of the statements that may match: a superset of those that do."""
        name = _purl_name(candidate)
        if self.purl_types is not None and name[0] not in self.purl_types:
            raise ValueError(f"this index holds only {', '.join(sorted(self.purl_types))} "
                             f"products, not {candidate.type}")
        return self.by_key.get((vulnerability.strip().casefold(), name), ())


def index_document(document: Document,
                   purl_types: Iterable[str] | None = None) -> IndexedDocument:
    """The index of ``document``; with ``purl_types`` (``("oci",)`` for running images), only
    of statements about products of those types, the rest left out of memory."""
    types = None if purl_types is None else frozenset(t.lower() for t in purl_types)
    found: dict[IndexKey, list[int]] = {}
    for index, statement in enumerate(document.statements):
        vulnerability = statement.vulnerability
        names = {name.strip().casefold() for name in
                 (vulnerability.name, vulnerability.id or "", *vulnerability.aliases) if name}
        # Products with subcomponents never match (see _matching_purls).
        products = {_purl_name(purl) for product in statement.products
                    if not product.subcomponents for purl in product_purls(product)}
        for key in ((name, product) for name in names for product in products
                    if types is None or product[0] in types):
            found.setdefault(key, []).append(index)
    kept = {index: document.statements[index] for indexes in found.values() for index in indexes}
    return IndexedDocument(document.id, document.timestamp, kept,
                           {key: tuple(indexes) for key, indexes in found.items()}, types)


def effective_statement(documents: Sequence[Document | IndexedDocument], vulnerability: str,
                        candidate: PackageURL,
                        considered: Callable[[Effective], bool] | None = None,
                        ) -> Effective | None:
    """The statement that decides whether ``candidate`` is affected by ``vulnerability``.

    Among the statements of all documents whose vulnerability matches (name, ``@id`` or alias)
    and that have a product purl covering the candidate, the latest timestamp wins; a statement
    without one has its document's. On equal timestamps the later one wins: documents in the
    order given, statements in document order (go-vex's EffectiveStatement does the same).
    ``considered`` leaves statements out before that choice. The verdicts do not use it: a
    statement a caller then ignores has still withdrawn every earlier one, and leaving it out
    would revive them (a January ``not_affected`` outliving a June ``affected``). None when no
    statement applies.
    An IndexedDocument gives the same answer as its document, reading fewer statements.
    """
    best: Effective | None = None
    best_key: tuple[tuple[int, int], int, int] | None = None
    for document_index, item in enumerate(documents):
        statements: Iterable[tuple[int, Statement]]
        if isinstance(item, IndexedDocument):
            statements = ((index, item.statements[index])
                          for index in item.candidates(vulnerability, candidate))
        else:
            statements = enumerate(item.statements)
        for index, statement in statements:
            if not statement.vulnerability.matches(vulnerability):
                continue
            purls = _matching_purls(statement, candidate)
            if not purls:
                continue
            # The statement's own timestamp, or its document's (Document.statement_timestamp).
            timestamp = statement.timestamp or item.timestamp or EARLIEST
            key = (_instant(timestamp), document_index, index)
            if best_key is not None and key < best_key:
                continue
            found = Effective(
                status=statement.status, justification=statement.justification,
                impact_statement=statement.impact_statement, timestamp=timestamp,
                document_id=item.id, statement_index=index, document_index=document_index,
                action_statement=statement.action_statement,
                digest_specific=any(purl.version for purl in purls))
            if considered is not None and not considered(found):
                continue
            best_key, best = key, found
    return best


#: Hex length of the digest algorithms OCI registries use; others only need the grammar.
_DIGEST_HEX = {"sha256": 64, "sha512": 128}


def _digest_problem(version: str) -> str | None:
    digest = urllib.parse.unquote(version)
    if not _DIGEST.match(digest):
        return "is not an image digest (sha256:<hex>)"
    algorithm, _, hex_part = digest.partition(":")
    wanted = _DIGEST_HEX.get(algorithm.lower())
    if wanted is not None and not re.fullmatch(f"[0-9a-fA-F]{{{wanted}}}", hex_part):
        return f"is not a {algorithm} digest ({wanted} hex digits)"
    return None


def _purl_problem(text: str) -> str | None:
    """Why a product identifier meant as a purl cannot be read, or None."""
    try:
        _unique_qualifiers(text)
    except ValueError as error:
        return str(error)
    if _parse_purl(text) is None:
        return (f"{_shown(text)} is not a valid purl (pkg:type/namespace/name@version); fix "
                "or remove the product, since a statement about it would silently say nothing")
    return None


def _product_texts(document: Document) -> Iterator[tuple[str, str]]:
    """(path, text) of every product purl: ``@id`` when it looks like one, and
    ``identifiers.purl``."""
    for index, statement in enumerate(document.statements):
        for number, product in enumerate(statement.products):
            where = f"statements[{index}].products[{number}]"
            if product.id and product.id.startswith("pkg:"):
                yield f"{where}.@id", product.id
            if product.identifiers is not None and product.identifiers.purl:
                yield f"{where}.identifiers.purl", product.identifiers.purl


def _purl_problems(document: Document) -> list[tuple[str, str]]:
    return [(where, problem) for where, text in _product_texts(document)
            if (problem := _purl_problem(text)) is not None]


def product_problems(document: Document) -> list[str]:
    """Product purls that can never match a running image: an oci purl whose version is not
    a digest. A statement about them silently changes no verdict, so the bulletin reports them
    in its Ready condition. (A purl that does not parse makes parse_document refuse the
    document.)"""
    problems = []
    for where, text in _product_texts(document):
        purl = _parse_purl(text)
        if purl is None:
            problems.append(f"{where}: {_shown(text)} is not a valid purl, so it matches nothing")
        elif purl.type.lower() == "oci" and purl.version and (
                problem := _digest_problem(purl.version)) is not None:
            problems.append(f"{where}: version {_shown(purl.version)} {problem}, so it matches "
                            "no image")
    return problems
