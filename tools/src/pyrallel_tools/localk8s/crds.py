"""The third-party CustomResourceDefinitions that the Helm chart's optional objects need, fetched once into the cache.

Why: the chart renders KEDA ``ScaledObject``/``TriggerAuthentication``, Argo Rollouts ``Rollout``/``AnalysisTemplate``,
prometheus-operator ``ServiceMonitor``/``PodMonitor``/``PrometheusRule`` and Strimzi ``KafkaConnect``/
``KafkaConnector`` objects. Applying them server-side to the local kube-apiserver only checks them against the real
schemas when the real CRDs are installed first, so they come from their projects' own released artifacts, never from
a hand-written schema:

- KEDA, Argo Rollouts and prometheus-operator ship their CRD YAML inside their Go module zips, which
  ``go mod download`` fetches from the Go module proxy (checksummed like any module) and this module reads.
- Strimzi ships no CRD YAML to any registry reached here (not in ``io.strimzi:api``), so Strimzi's own CRD generator
  (``io.strimzi:crd-generator``, Maven Central) is run over the ``io.strimzi:api`` classes with the arguments of
  Strimzi's own build (``api/pom.xml`` of the release, carried in the api jar). It needs Java 21 or newer; a Java 17
  default is fine when a newer JDK is in ``JAVA_HOME`` or ``/usr/lib/jvm``.

The files land in ``<cache>/k8s-crds-<versions>/``, one YAML file per CRD named after it (e.g.
``scaledobjects.keda.sh.yaml``); the folder name is the cache key and a marker file makes a later call a no-op that
runs neither Go, Maven nor Java. Everything is built in a private staging folder renamed into place in one step.

Called by the local API server's tests and fixtures (``ensure_crds`` before the apiserver's owner installs
``crd_documents()`` with a server-side apply), on the caller's thread; every subprocess is bounded by a timeout.
Some of these CRDs exceed the 256 KiB ``last-applied-configuration`` annotation of client-side apply, which is why
they are applied server-side.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pyrallel_tools.jdk import java_at_least
from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localkafka.jars import cache_root
from pyrallel_tools.toolcache import build_lock, last_lines, run_checked

log = logging.getLogger(__name__)

CRD_VERSIONS: dict[str, str] = {
    "keda": "v2.21.1",
    "argo-rollouts": "v1.10.2",
    "prometheus-operator": "v0.94.1",
    "strimzi": "1.2.0",
}
"""The pinned release of each project: the newest one the Go module proxy (KEDA, Argo Rollouts,
prometheus-operator) or Maven Central (Strimzi ``api`` and ``crd-generator``) served on 2026-12-06. Strimzi 1.x
serves only ``kafka.strimzi.io/v1`` (``v1beta2`` is gone), so the chart's Strimzi objects use ``v1``."""

_MARKER = ".complete"
_GO_TIMEOUT_S = 600.0
_MAVEN_TIMEOUT_S = 900.0
_JAVA_TIMEOUT_S = 300.0
_MIN_STRIMZI_JAVA = 21
"""Strimzi 1.x classes are Java 21 bytecode (class file version 65)."""
_CRD_API_VERSION = "apiextensions.k8s.io/v1"
_Loader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
"""libyaml's loader parses the ~3 MB of Argo Rollouts CRDs in well under a second; the pure-Python one takes many."""


@dataclass(frozen=True, slots=True)
class _GoModuleCrds:
    """CRD files at ``folder`` inside the zip of the Go module ``module`` at ``CRD_VERSIONS[project]``."""

    project: str
    module: str
    folder: str
    files: tuple[str, ...]


_GO_MODULE_CRDS = (
    _GoModuleCrds(
        "keda",
        "github.com/kedacore/keda/v2",
        "config/crd/bases",
        (
            "keda.sh_scaledobjects.yaml",
            "keda.sh_triggerauthentications.yaml",
            "keda.sh_clustertriggerauthentications.yaml",
        ),
    ),
    _GoModuleCrds(
        "argo-rollouts",
        "github.com/argoproj/argo-rollouts",
        "manifests/crds",
        (
            "rollout-crd.yaml",
            "analysis-template-crd.yaml",
            "cluster-analysis-template-crd.yaml",
            "analysis-run-crd.yaml",
            "experiment-crd.yaml",
        ),
    ),
    _GoModuleCrds(
        "prometheus-operator",
        "github.com/prometheus-operator/prometheus-operator",
        "example/prometheus-operator-crd",
        (
            "monitoring.coreos.com_servicemonitors.yaml",
            "monitoring.coreos.com_podmonitors.yaml",
            "monitoring.coreos.com_prometheusrules.yaml",
        ),
    ),
)

_STRIMZI_CLASSES = (
    "io.strimzi.api.kafka.model.connect.KafkaConnect",
    "io.strimzi.api.kafka.model.connector.KafkaConnector",
)
_STRIMZI_GENERATOR_ARGS = (
    # As in the `generate-crd-co-install-v1` execution of Strimzi's api/pom.xml (release 1.2.0).
    "--label", "app:strimzi",
    "--label", "strimzi.io/crd-install:true",
    "--target-kube", "1.16+",
    "--crd-api-version", "v1",
    "--api-versions", "v1",
    "--storage-version", "v1",
    "--yaml",
)


def crds_key() -> str:
    """The cache folder's name, e.g. ``k8s-crds-keda-v2.21.1-argo-rollouts-v1.10.2-...-strimzi-1.2.0``."""
    return "k8s-crds-" + "-".join(f"{project}-{version}" for project, version in CRD_VERSIONS.items())


def ensure_crds() -> Path:
    """The folder holding one YAML file per CRD, fetched and generated the first time only.

    Raises ``LocalKafkaError`` saying which tool or download failed and what it printed last.
    """
    folder = cache_root() / crds_key()
    if (folder / _MARKER).exists():
        return folder
    go = _require("go", "Go 1.23 or newer (https://go.dev/doc/install) downloads the KEDA, Argo Rollouts and "
                  "prometheus-operator modules that carry their CRDs")
    mvn = _require("mvn", "Maven resolves Strimzi's CRD generator from Maven Central (apt-get install maven)")
    java = java_at_least(_MIN_STRIMZI_JAVA, "Strimzi's CRD generator")
    with build_lock(folder):  # a second process waits for the first one's folder instead of fetching it again
        if (folder / _MARKER).exists():
            return folder
        started = time.monotonic()
        log.info("Fetching the KEDA, Argo Rollouts, prometheus-operator and Strimzi CRDs into %s", folder)
        shutil.rmtree(folder, ignore_errors=True)  # what an interrupted earlier run left, without its marker
        staging = Path(tempfile.mkdtemp(prefix=".k8s-crds-staging-", dir=folder.parent))
        try:
            staging.chmod(0o755)  # mkdtemp's 0700 would stay on the renamed folder
            sources: list[str] = []
            for source in _GO_MODULE_CRDS:
                sources += _copy_from_module(go, source, staging)
            sources += _generate_strimzi(mvn, java, staging)
            (staging / _MARKER).write_text(crds_key() + "\n" + "\n".join(sources) + "\n")
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("Fetched %d CRDs in %.1fs", len(list(folder.glob("*.yaml"))), time.monotonic() - started)
    return folder


def crd_documents() -> list[dict[str, Any]]:
    """Every CRD of ``ensure_crds()`` as a parsed dict, in file-name order, each checked as in ``ensure_crds``."""
    folder = ensure_crds()
    documents: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.yaml")):
        documents.append(_parse_crd(path.read_bytes(), str(path)))
    return documents


def _require(tool: str, why: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise LocalKafkaError(f"{tool} was not found on PATH. {why}.")
    return found


def _copy_from_module(go: str, source: _GoModuleCrds, staging: Path) -> list[str]:
    """Write the CRDs of ``source`` into ``staging``; return one provenance line per file."""
    version = CRD_VERSIONS[source.project]
    archive = _module_zip(go, source.module, version)
    lines: list[str] = []
    try:
        with zipfile.ZipFile(archive) as zipped:
            for name in source.files:
                member = f"{source.module}@{version}/{source.folder}/{name}"
                try:
                    data = zipped.read(member)
                except KeyError as exc:
                    raise LocalKafkaError(
                        f"{source.module}@{version} has no {source.folder}/{name}: the CRD list in "
                        f"{__name__} needs updating for this version"
                    ) from exc
                lines.append(f"{_write_crd(data, f'{source.module}@{version}/{source.folder}/{name}', staging)}"
                             f" <- {source.module}@{version} {source.folder}/{name}")
    except (OSError, zipfile.BadZipFile) as exc:
        raise LocalKafkaError(f"Could not read the module zip {archive}: {exc}") from exc
    return lines


def _module_zip(go: str, module: str, version: str) -> Path:
    """The checksummed zip of ``module@version`` in Go's module cache, downloaded by ``go mod download``.

    A module whose ``go.mod`` asks for a newer Go than the local one is still downloaded and verified (``Zip`` and
    ``Sum`` are in the JSON) before Go reports ``requires go >= ...``; only its files are read here, nothing is
    compiled, so that error is not fatal.
    """
    command = [go, "mod", "download", "-json", f"{module}@{version}"]
    env = dict(os.environ, GOFLAGS="-mod=mod")
    # From an empty folder: a go.mod or go.work around the caller's cwd must not be able to change what is fetched.
    with tempfile.TemporaryDirectory(prefix="go-crds-") as empty:
        try:
            proc = subprocess.run(
                command, cwd=empty, env=env, capture_output=True, text=True, timeout=_GO_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalKafkaError(
                f"`{' '.join(command)}` did not finish within {_GO_TIMEOUT_S:.0f}s. Is the Go module proxy reachable?"
            ) from exc
        except OSError as exc:
            raise LocalKafkaError(f"Could not run {go}: {exc}") from exc
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        info = {}
    error = str(info.get("Error") or "") if isinstance(info, dict) else ""
    zip_path = str(info.get("Zip") or "") if isinstance(info, dict) else ""
    verified = isinstance(info, dict) and bool(info.get("Sum"))
    if zip_path and verified and Path(zip_path).is_file() and (not error or "requires go" in error):
        if error:
            log.info("go mod download %s@%s: %s (its CRD files are read all the same)", module, version, error)
        return Path(zip_path)
    last = last_lines(error or proc.stdout + proc.stderr)
    raise LocalKafkaError(
        f"`{' '.join(command)}` failed (exit {proc.returncode}); it needs the Go module proxy. Last lines:\n{last}"
    )


def _generate_strimzi(mvn: str, java: str, staging: Path) -> list[str]:
    """Run Strimzi's CRD generator over Strimzi's API classes; return one provenance line per CRD."""
    version = CRD_VERSIONS["strimzi"]
    with tempfile.TemporaryDirectory(prefix="strimzi-crds-") as work:
        lib = Path(work) / "lib"
        out = Path(work) / "out"
        out.mkdir()
        with resources.as_file(resources.files("pyrallel_tools.localk8s") / "strimzi-crds.pom.xml") as pom:
            run_checked(
                [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies", "-DincludeScope=runtime",
                 f"-DoutputDirectory={lib}", f"-Dstrimzi.version={version}"],
                timeout_s=_MAVEN_TIMEOUT_S, failure=f"Maven could not resolve io.strimzi:api and "
                f"io.strimzi:crd-generator {version}. Is Maven Central reachable?",
            )
        targets = {cls: out / f"{cls.rsplit('.', 1)[1]}.yaml" for cls in _STRIMZI_CLASSES}
        run_checked(
            [java, "-cp", f"{lib}{os.sep}*", "io.strimzi.crdgenerator.CrdGenerator", *_STRIMZI_GENERATOR_ARGS,
             *(f"{cls}={target}" for cls, target in targets.items())],
            timeout_s=_JAVA_TIMEOUT_S, failure=f"Strimzi's CRD generator {version} failed",
        )
        lines: list[str] = []
        for cls, target in targets.items():
            if not target.is_file():
                raise LocalKafkaError(f"Strimzi's CRD generator {version} wrote no {target.name} for {cls}")
            name = _write_crd(target.read_bytes(), f"Strimzi {version} CRD generator ({cls})", staging)
            lines.append(f"{name} <- io.strimzi:crd-generator:{version} over io.strimzi:api:{version} {cls}")
    return lines


def _parse_crd(data: bytes, origin: str) -> dict[str, Any]:
    """The one CustomResourceDefinition in ``data``, refusing anything else or a CRD without a served schema."""
    try:
        documents = [doc for doc in yaml.load_all(data, Loader=_Loader) if doc is not None]
    except yaml.YAMLError as exc:
        raise LocalKafkaError(f"{origin} is not valid YAML: {exc}") from exc
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise LocalKafkaError(f"{origin} holds {len(documents)} YAML documents, expected one CRD")
    crd: dict[str, Any] = documents[0]
    if crd.get("apiVersion") != _CRD_API_VERSION or crd.get("kind") != "CustomResourceDefinition":
        raise LocalKafkaError(
            f"{origin} is {crd.get('apiVersion')}/{crd.get('kind')}, not a {_CRD_API_VERSION} CustomResourceDefinition"
        )
    name = crd.get("metadata", {}).get("name")
    versions = crd.get("spec", {}).get("versions") or []
    if not isinstance(name, str) or not name:
        raise LocalKafkaError(f"{origin} has no metadata.name")
    if not any(v.get("served") and v.get("schema", {}).get("openAPIV3Schema") for v in versions):
        raise LocalKafkaError(f"{origin} ({name}) has no served version with an openAPIV3Schema")
    return crd


def _write_crd(data: bytes, origin: str, staging: Path) -> str:
    """Check ``data`` and write it unchanged as ``<staging>/<crd name>.yaml``; return that file's name."""
    name = str(_parse_crd(data, origin)["metadata"]["name"])
    target = staging / f"{name}.yaml"
    if target.exists():
        raise LocalKafkaError(f"Two sources define the CRD {name} (the second is {origin})")
    target.write_bytes(data)
    return target.name


