"""``fluxsupport bulletin``: check bulletins offline and build them from images files or
public OSV advisories.

These two run in CI pipelines without a cluster, so this module imports nothing that talks to
one; ``bulletin list`` lives in :mod:`fluxsupport.cli.bulletin_list`, imported when it runs.

``check`` exit codes: 0 nothing is vulnerable, 1 something is, 2 invalid input.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import re
import tempfile
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar

import jsonschema
import pydantic
import typer
import yaml

from fluxsupport import constants, resources
from fluxsupport.cli import output
from fluxsupport.cli.lazy import Lazy, LazyGroup
from fluxsupport.domain import advisory as osv
from fluxsupport.domain import artifact, inventory, remediation, vex
from fluxsupport.domain import bulletin as domain


class _Group(LazyGroup):
    lazy: ClassVar = {"list": Lazy("fluxsupport.cli.bulletin_list:list_bulletins",
                                   "List SecurityBulletins with their verdict counts.")}


app = typer.Typer(cls=_Group, help="Check, build and list SecurityBulletins.",
                  no_args_is_help=True)

_CVE = re.compile(r"^(CVE-\d{4}-\d{4,}|GHSA(-[23456789cfghjmpqrvwx]{4}){3})$")


def _schema() -> dict[str, Any]:
    for crd in resources.crd_documents():
        if crd["spec"]["names"]["kind"] == constants.BULLETIN_KIND:
            schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            return schema
    raise output.fail("the SecurityBulletin CRD is missing from the installed package; "
                      "reinstall fluxsupport")


def _read_yaml_documents(path: pathlib.Path) -> list[Any]:
    try:
        return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except OSError as error:
        raise output.fail(f"{path}: cannot read: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise output.fail(f"{path}: not valid YAML: {error}") from error


def load_bulletins(paths: list[pathlib.Path]) -> list[domain.Bulletin]:
    validator = jsonschema.Draft7Validator(_schema(), format_checker=jsonschema.FormatChecker())
    bulletins = []
    for path in paths:
        for index, doc in enumerate(_read_yaml_documents(path)):
            where = f"{path}" + (f" (document {index + 1})" if index else "")
            if not isinstance(doc, dict) or doc.get("kind") != constants.BULLETIN_KIND:
                raise output.fail(f"{where}: expected kind: SecurityBulletin")
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
            if errors:
                first = errors[0]
                field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                                for p in first.absolute_path).lstrip(".")
                raise output.fail(f"{where}: {field or '(root)'}: {first.message}")
            name = (doc.get("metadata") or {}).get("name")
            if not name:
                raise output.fail(f"{where}: metadata.name: required")
            try:
                bulletins.append(domain.Bulletin(name, domain.BulletinSpec.model_validate(
                    doc["spec"])))
            except pydantic.ValidationError as error:
                item = error.errors()[0]
                raise output.fail(f"{where}: spec.{'.'.join(map(str, item['loc']))}: "
                                  f"{item['msg']}") from error
    return bulletins


def load_inventory(paths: list[pathlib.Path]) -> list[inventory.RunningComponent]:
    objects: list[dict[str, Any]] = []
    for path in paths:
        for doc in _read_yaml_documents(path):
            if not isinstance(doc, dict):
                raise output.fail(f"{path}: expected Kubernetes objects, got {type(doc).__name__}")
            if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
                objects += doc["items"]
            else:
                objects.append(doc)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(str(obj.get("kind")), []).append(obj)
    components = inventory.build_inventory(by_kind.get("Deployment", []), by_kind.get("Pod", []),
                                           by_kind.get("FluxReport", []),
                                           by_kind.get("FluxInstance", []))
    if not components:
        raise output.fail(f"{', '.join(map(str, paths))}: no Flux Deployment found (labels "
                          "app.kubernetes.io/part-of=flux or app.kubernetes.io/name=flux-operator)")
    return components


def verdict_json(bulletin: domain.Bulletin, verdicts: list[domain.ComponentVerdict]
                 ) -> dict[str, Any]:
    return {"name": bulletin.name, "components": [{
        "namespace": v.component.namespace, "component": v.component.component,
        "image": v.component.image, "digest": ",".join(v.component.digests),
        "verdict": v.verdict, "reason": v.reason,
        "cves": [{"id": c.id, "verdict": c.verdict, "reason": c.reason} for c in v.cves],
        "remediation": v.remediation.as_kustomize_image() if v.remediation else None,
    } for v in verdicts]}


@app.command()
def check(
    bulletins: Annotated[list[pathlib.Path], typer.Argument(help="SecurityBulletin YAML files.")],
    inventory_files: Annotated[list[pathlib.Path], typer.Option(
        "--inventory", help="`kubectl get deploy,pods -n flux-system -o yaml` output, or "
                            "multi-document YAML.")],
    vex_files: Annotated[list[pathlib.Path] | None, typer.Option(
        "--vex", help="OpenVEX JSON documents.")] = None,
    fmt: Annotated[output.Format, output.OutputOption] = output.Format.table,
) -> None:
    """Check bulletins against an inventory file, offline (for CI pipelines).

    Example: fluxsupport bulletin check cpsb-2026-0811.yaml --inventory flux.yaml
    --vex vex/v2.7.json -o json

    Exit codes: 0 nothing is vulnerable, 1 something is, 2 invalid input.
    """
    parsed = load_bulletins(bulletins)
    components = load_inventory(inventory_files)
    documents = []
    for path in vex_files or []:
        try:
            document = vex.parse_document(path.read_bytes(), source=str(path))
        except OSError as error:
            raise output.fail(f"{path}: cannot read: {error.strerror}") from error
        except vex.VexError as error:
            raise output.fail(str(error)) from error
        for line in document.warnings:  # read as go-vex reads it; the publisher should fix it
            typer.echo(f"warning: {path}: {line}", err=True)
        documents.append(document)
    now = datetime.datetime.now(datetime.UTC)
    results = [(b, domain.evaluate(b, components, parsed, documents, now=now)) for b in parsed]
    report = {"bulletins": [verdict_json(b, v) for b, v in results]}
    rows = [{"bulletin": b["name"], **c,
             "fix": (f"{c['remediation']['newTag']}@{c['remediation']['digest']}"
                     if c["remediation"] else "")}
            for b in report["bulletins"] for c in b["components"]]
    output.emit(report, fmt, [("BULLETIN", "bulletin"), ("NAMESPACE", "namespace"),
                              ("COMPONENT", "component"), ("VERDICT", "verdict"),
                              ("REASON", "reason"), ("FIX", "fix")], rows)
    if any(v.verdict == "Vulnerable" for _, verdicts in results for v in verdicts):
        raise typer.Exit(1)


@app.command("import")
def import_bulletins(
    sources: Annotated[list[pathlib.Path] | None, typer.Argument(
        help="With --from osv: advisory JSON files, or directories searched for *.json.",
        show_default=False)] = None,
    source_format: Annotated[str | None, typer.Option(
        "--from", help="osv: one bulletin per OSV advisory (GitHub Advisory Database) "
                       "instead of --images.")] = None,
    output_dir: Annotated[pathlib.Path | None, typer.Option(
        "--output-dir", "-o", help="With --from osv: write <name>.yaml per bulletin here "
                                   "(created; unchanged files are left alone).")] = None,
    images: Annotated[pathlib.Path | None, typer.Option(
        help="Distribution images file, images/<version>/<variant>.yaml (kustomize images:).")
    ] = None,
    cve: Annotated[list[str] | None, typer.Option(
        help="CVE or GHSA id the images fix (repeat).")] = None,
    name: Annotated[str | None, typer.Option(help="metadata.name of the bulletin.")] = None,
    component: Annotated[list[str] | None, typer.Option(
        help="Only these components (repeat); all in the file when omitted.")] = None,
    title: Annotated[str | None, typer.Option()] = None,
    severity: Annotated[str, typer.Option(help="Critical, High, Medium or Low.")] = "High",
    published: Annotated[str | None, typer.Option(help="RFC 3339; now when omitted.")] = None,
    patch_by: Annotated[str | None, typer.Option(help="RFC 3339 patch deadline.")] = None,
    embargo_until: Annotated[str | None, typer.Option(help="RFC 3339 embargo end.")] = None,
    policy: Annotated[pathlib.Path | None, typer.Option(
        help="With --from osv: the SLA policy whose remediationFramework and calendar give "
             "each vulnerability's remediationDueAt.")] = None,
) -> None:
    """Build SecurityBulletin manifests from a distribution images file plus CVE ids, or
    from public advisories in the OSV format.

    Example: fluxsupport bulletin import --images images/v2.7.5/enterprise-distroless.yaml
    --cve CVE-2026-47680 --component source-controller --name cpsb-2026-0602

    Example: fluxsupport bulletin import --from osv advisories/ -o bulletins/
    """
    if source_format is not None:
        if source_format != "osv":
            raise typer.BadParameter("the only format is osv", param_hint="--from")
        given = [flag for flag, value in (("--images", images), ("--cve", cve),
                                          ("--name", name), ("--component", component),
                                          ("--title", title), ("--published", published),
                                          ("--patch-by", patch_by),
                                          ("--embargo-until", embargo_until)) if value]
        if given:
            raise typer.BadParameter(f"{given[0]} does not go with --from osv: the advisory "
                                     "says it", param_hint=given[0])
        _import_osv(sources or [], output_dir, policy)
        return
    if sources or output_dir or policy:
        raise typer.BadParameter("files, -o and --policy need --from osv", param_hint="--from")
    if images is None or not cve or not name:
        missing = next(flag for flag, value in (("--images", images), ("--cve", cve),
                                                ("--name", name)) if not value)
        raise typer.BadParameter(f"{missing} is required without --from osv",
                                 param_hint=missing)
    manifest = _from_images(images, cve, name, component, title, severity, published,
                            patch_by, embargo_until)
    typer.echo(yaml.safe_dump(manifest, sort_keys=False).rstrip())


def _from_images(images: pathlib.Path, cve: list[str], name: str, component: list[str] | None,
                 title: str | None, severity: str, published: str | None,
                 patch_by: str | None, embargo_until: str | None) -> dict[str, Any]:
    bad = [c for c in cve if not _CVE.match(c)]
    if bad:
        raise typer.BadParameter(f"{bad[0]!r} is not a CVE-YYYY-NNNN or GHSA id",
                                 param_hint="--cve")
    if severity not in ("Critical", "High", "Medium", "Low"):
        raise typer.BadParameter("use Critical, High, Medium or Low", param_hint="--severity")
    docs = _read_yaml_documents(images)
    entries = docs[0].get("images") if docs and isinstance(docs[0], dict) else None
    if not isinstance(entries, list) or not entries:
        raise output.fail(f"{images}: expected a kustomize `images:` list")
    fixes = []
    for index, entry in enumerate(entries):
        try:
            repository, tag, digest = entry["name"], entry["newTag"], entry["digest"]
        except (KeyError, TypeError) as error:
            raise output.fail(f"{images}: images[{index}]: needs name, newTag and digest"
                              ) from error
        short = str(repository).rsplit("/", 1)[-1]
        if component and short not in component:
            continue
        fixes.append({"component": short, "version": tag,
                      "images": [{"repository": repository, "digest": digest}]})
    if not fixes:
        raise output.fail(f"{images}: none of the components {component} is in the file")
    components = [f["component"] for f in fixes]
    spec: dict[str, Any] = {
        "title": title or f"Fix {', '.join(cve)}",
        "publishedAt": published or datetime.datetime.now(datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"),
        "severity": severity,
        "vulnerabilities": [{"id": c, "severity": severity, "components": components}
                            for c in cve],
        "fixes": fixes,
    }
    if patch_by:
        spec["patchBy"] = patch_by
    if embargo_until:
        spec["embargoUntil"] = embargo_until
    manifest = {"apiVersion": constants.API_VERSION, "kind": constants.BULLETIN_KIND,
                "metadata": {"name": name}, "spec": spec}
    _check_manifest(manifest)
    return manifest


def _check_manifest(manifest: dict[str, Any], where: str = "the bulletin") -> None:
    validator = jsonschema.Draft7Validator(_schema(), format_checker=jsonschema.FormatChecker())
    errors = list(validator.iter_errors(manifest))
    if errors:
        raise output.fail(f"{where} would be invalid: {errors[0].message}")
    try:
        domain.BulletinSpec.model_validate(manifest["spec"])
    except pydantic.ValidationError as error:
        raise output.fail(f"{where} would be invalid: {error}") from error


def _advisory_files(sources: list[pathlib.Path]) -> list[pathlib.Path]:
    if not sources:
        raise typer.BadParameter("name advisory files or directories", param_hint="FILES")
    files: list[pathlib.Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(p for p in source.rglob("*.json") if p.is_file())
        elif source.is_file():
            files.append(source)
        else:
            raise output.fail(f"{source}: no such file or directory")
    if not files:
        raise output.fail(f"{', '.join(map(str, sources))}: no *.json advisory found")
    return files


def _read_files(files: list[pathlib.Path]) -> Iterator[tuple[str, bytes | artifact.TooLarge]]:
    """One file at a time, as the operator reads an artifact's; a file larger than the
    operator would read is named, not read."""
    limit = osv.LIMITS.file
    for path in files:
        try:
            size = path.stat().st_size
            yield str(path), (artifact.TooLarge(size, limit) if size > limit
                              else path.read_bytes())
        except OSError as error:
            raise output.fail(f"{path}: cannot read: {error.strerror}") from error


def _import_osv(sources: list[pathlib.Path], output_dir: pathlib.Path | None,
                policy: pathlib.Path | None = None) -> None:
    # The operator's advisory feed reads its files through the same function: one behaviour.
    feed = osv.read_feed(
        _read_files(_advisory_files(sources)),
        jsonschema.Draft202012Validator(resources.osv_schema()),
        jsonschema.Draft7Validator(_schema(), format_checker=jsonschema.FormatChecker()))
    if feed.invalid:
        # Offline, for a person or CI: the first problem stops the import (exit 2).
        raise output.fail(f"{feed.invalid[0].path}: {feed.invalid[0].reason}")
    for skipped in feed.skipped:
        typer.echo(f"skipped {skipped.advisory_id}: no Flux component among "
                   f"{', '.join(skipped.converted.skipped_packages) or 'its packages'}",
                   err=True)
    manifests = [imported.manifest() for imported in feed.bulletins]
    _remediation_due(manifests, policy)
    texts = [yaml.safe_dump(m, sort_keys=False, allow_unicode=True) for m in manifests]
    if output_dir is None:
        typer.echo("---\n".join(texts).rstrip())
        return
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        root = output_dir.resolve(strict=True)
        targets = [_target(root, str(m["metadata"]["name"])) for m in manifests]
        for target, text in zip(targets, texts, strict=True):
            _write(target, text)
    except OSError as error:
        raise output.fail(f"{output_dir}: cannot write: {error.strerror or error}") from error


def _remediation_due(manifests: list[dict[str, Any]], policy_path: pathlib.Path | None) -> None:
    """Write the vendor's remediation due time into each vulnerability, under the policy's
    remediationFramework; warn about CVSS vectors that cannot be scored."""
    for manifest in manifests:
        for vulnerability in manifest["spec"]["vulnerabilities"]:
            vector = vulnerability.get("cvssVector")
            if vector is not None and "cvssScore" not in vulnerability:
                try:
                    remediation.base_score(vector)
                except remediation.CvssError as error:
                    typer.echo(f"warning: {manifest['metadata']['name']}: {vulnerability['id']}: "
                               f"no CVSS score ({error}); the severity decides", err=True)
    if policy_path is None:
        return
    # The calendar and its holidays only when a policy is given: `bulletin check` starts faster.
    from fluxsupport.domain.calendar import BusinessCalendar
    from fluxsupport.domain.policy import PolicyError, load_policy

    try:
        policy = load_policy(policy_path.read_text(), source=str(policy_path))
    except OSError as error:
        raise typer.BadParameter(f"cannot read {policy_path}: {error.strerror}",
                                 param_hint="--policy") from error
    except PolicyError as error:
        raise typer.BadParameter(str(error), param_hint="--policy") from error
    framework = policy.remediation_framework
    if framework is None:
        typer.echo(f"{policy_path}: no remediationFramework: no remediationDueAt written",
                   err=True)
        return
    calendar = BusinessCalendar(policy)
    for manifest in manifests:
        spec = manifest["spec"]
        dues = remediation.bulletin_dues(domain.BulletinSpec.model_validate(spec), framework,
                                         policy, calendar)
        for vulnerability in spec["vulnerabilities"]:
            due = dues.get(vulnerability["id"])
            if due is not None:
                vulnerability["remediationFramework"] = framework
                vulnerability["remediationDueAt"] = due.due_at.isoformat().replace("+00:00", "Z")


def _target(root: pathlib.Path, name: str) -> pathlib.Path:
    """``<root>/<name>.yaml``, refused unless it resolves to a file directly in ``root``.

    The names are valid Kubernetes names already (no ``/``, no ``..``: read_feed refuses
    the others); this also refuses a link in the directory that points elsewhere. Checked
    for every bulletin before the first is written, so a refusal writes nothing."""
    target = root / f"{name}.yaml"
    if target.resolve().parent != root:
        raise output.fail(f"{target}: not written: it resolves to {target.resolve()}, "
                          f"outside {root}")
    return target


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write(target: pathlib.Path, text: str) -> None:
    before = target.read_text() if target.exists() else None
    if before == text:
        state = "unchanged"
    else:
        # Written to a new file next to the target and renamed over it: a reader (a Flux
        # Kustomization, kubectl apply) never sees half a file, and the rename replaces
        # the directory entry, never writing through a link.
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                       suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as stream:
                stream.write(text)
            os.chmod(partial, 0o666 & ~_umask())  # as an ordinary new file, not mkstemp's 0600
            os.replace(partial, target)
        except BaseException:
            pathlib.Path(partial).unlink(missing_ok=True)
            raise
        state = "created" if before is None else "updated"
    typer.echo(f"{state} {target}", err=True)
