"""The OpenVEX documents that bulletins cite (spec.vex), read from the ConfigMaps of the
operator's namespace and parsed once per text.

A document of up to 1 MiB takes longer to parse than the rest of a bulletin's evaluation,
and many bulletins share one: each ConfigMap key's document is parsed, checked and indexed
once, and again only when its text changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from fluxsupport.domain import bulletin, securitybulletin, vex
from fluxsupport.kube import reflector


@dataclasses.dataclass(frozen=True)
class ParsedVex:
    """One ConfigMap key's OpenVEX document, parsed, checked and indexed once per text."""

    text: str
    document: vex.IndexedDocument | None
    problem: str | None
    #: Products that can match nothing (vex.product_problems).
    warnings: tuple[str, ...]
    #: Deviations from OpenVEX v0.2.0 read leniently (vex.Document.warnings).
    deviations: tuple[str, ...] = ()


def parse(data: str, source: str) -> ParsedVex:
    try:
        document = vex.parse_document(data, source=source)
    except vex.VexError as error:
        return ParsedVex(data, None, str(error), ())
    # Verdicts only ask about running images (vex.image_purl): statements about other
    # products (packages inside images, Go modules) need no memory.
    return ParsedVex(data, vex.index_document(document, purl_types=("oci",)), None,
                     tuple(vex.product_problems(document)), document.warnings)


class VexDocuments:
    """The parsed documents by (ConfigMap, key), kept while their text stays."""

    def __init__(self, configmaps: reflector.Watch, namespace: str) -> None:
        self.configmaps = configmaps
        self.namespace = namespace
        self._parsed: dict[tuple[str, str], ParsedVex] = {}

    def __len__(self) -> int:
        return len(self._parsed)

    def read(self, refs: Iterable[bulletin.VexRef]) -> securitybulletin.CitedVex:
        """The usable documents; the problems of the unusable ones; the products of usable
        ones that can match nothing (a bad digest), which the Ready condition names; and what
        usable ones deviate from OpenVEX v0.2.0, which the VexWarning condition names."""
        documents: list[vex.IndexedDocument] = []
        problems: list[str] = []
        warnings: list[str] = []
        deviations: list[str] = []
        for ref in refs:
            name, key = ref.config_map_key_ref.name, ref.config_map_key_ref.key
            where = f"ConfigMap {self.namespace}/{name}"
            configmap = self.configmaps.objects.get(name)
            if configmap is None:
                problems.append(f"{where} not found; create it in the operator's namespace")
                continue
            data = (configmap.get("data") or {}).get(key)
            if data is None:
                problems.append(f"{where} has no key {key!r}")
                continue
            parsed = self._parsed.get((name, key))
            if parsed is None or not (parsed.text is data or parsed.text == data):
                parsed = parse(data, f"{where} key {key}")
            elif parsed.text is not data:  # the same text, listed again: keep one copy
                parsed = dataclasses.replace(parsed, text=data)
            self._parsed[(name, key)] = parsed
            if parsed.document is None:
                problems.append(parsed.problem or "")
                continue
            documents.append(parsed.document)
            warnings += [f"{where} key {key}: {problem}" for problem in parsed.warnings]
            deviations += [f"{where} key {key}: {line}" for line in parsed.deviations]
        return securitybulletin.CitedVex(documents, problems, warnings, deviations)

    def prune(self) -> None:
        """Drop the documents whose ConfigMap key is gone or holds another text now."""
        for (name, key), parsed in list(self._parsed.items()):
            data = ((self.configmaps.objects.get(name) or {}).get("data") or {}).get(key)
            if data is None or not (data is parsed.text or data == parsed.text):
                del self._parsed[(name, key)]
