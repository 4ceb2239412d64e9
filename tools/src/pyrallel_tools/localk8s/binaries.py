"""The binaries of the local Kubernetes test bed, built from the Go module proxy: etcd, kube-apiserver and Helm.

No kubelet, no scheduler, no controller-manager: like controller-runtime's envtest, a real API server on a real
etcd is what the chart (server-side apply against the real schemas) and the Kubernetes-native controller (custom
resource, Lease, pods labelled like a color's) need. Nothing runs a container.

How each builds (checked on this kind of machine; argued in docs/decisions.md):

* Helm: ``go install helm.sh/helm/v4/cmd/helm@VERSION`` (with the version stamped in, or ``helm version`` says
  only ``v4.3``).
* etcd and kube-apiserver: ``go install pkg@version`` refuses both (their go.mod has ``replace`` directives), so
  each is built from a small wrapper module committed under ``gomod/`` (go.mod + go.sum + a ``tools`` file
  importing the command): etcd's requires the server and its sibling modules at one version; kube-apiserver's
  points the 33 ``k8s.io/*`` staging modules that ``k8s.io/kubernetes`` replaces with ``./staging`` at their tagged
  ``v0.37.2``. The ldflags stamp the version the API server reports (``/version``), which Helm checks against a
  chart's ``kubeVersion``.

Cold, on two cores: kube-apiserver ~6-8 min (and ~4 GB of Go build cache), Helm ~3 min, etcd ~1 min.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyrallel_tools.gobuild import GoBuild, ensure_go_tools

HELM_VERSION = "v4.3.2"
KUBE_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"
CACHE_KEY = f"k8s-helm{HELM_VERSION[1:]}-kube{KUBE_VERSION[1:]}-etcd{ETCD_VERSION[1:]}"
"""The cache folder's name: the versions are the key, so a bump of any of them builds all three anew."""
_GOMOD = Path(__file__).parent / "gomod"
_KUBE_MAJOR, _KUBE_MINOR = KUBE_VERSION[1:].split(".")[:2]
_VERSION_PKG = "k8s.io/component-base/version"
_KUBE_LDFLAGS = " ".join([
    "-s", "-w",
    f"-X {_VERSION_PKG}.gitVersion={KUBE_VERSION}",
    f"-X {_VERSION_PKG}.gitMajor={_KUBE_MAJOR}",
    f"-X {_VERSION_PKG}.gitMinor={_KUBE_MINOR}",
    f"-X {_VERSION_PKG}.gitTreeState=clean",
    f"-X {_VERSION_PKG}.buildDate=1970-01-01T00:00:00Z",
])


@dataclass(frozen=True, slots=True)
class K8sBinaries:
    helm: Path
    etcd: Path
    kube_apiserver: Path


def _module_files(name: str) -> tuple[Path, ...]:
    return tuple(_GOMOD / name / f for f in ("go.mod", "go.sum", "tools.go"))


def _builds() -> list[GoBuild]:
    return [
        GoBuild("etcd", ["go", "build", "-mod=readonly", "-trimpath", "-o", "{out}/etcd", "go.etcd.io/etcd/server/v3"],
                output="etcd", cwd=_GOMOD / "etcd", inputs=_module_files("etcd")),
        GoBuild("helm", ["go", "install", "-trimpath",
                         f"-ldflags=-s -w -X helm.sh/helm/v4/internal/version.version={HELM_VERSION}",
                         f"helm.sh/helm/v4/cmd/helm@{HELM_VERSION}"], output="helm"),
        GoBuild("kube-apiserver", ["go", "build", "-mod=readonly", "-trimpath", f"-ldflags={_KUBE_LDFLAGS}", "-o",
                                   "{out}/kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"],
                output="kube-apiserver", cwd=_GOMOD / "kube-apiserver", timeout_s=2400.0,
                inputs=_module_files("kube-apiserver")),
    ]


def ensure_k8s() -> K8sBinaries:
    """Paths of the three binaries, built into ``<cache>/k8s-<versions>/bin/`` the first time only.

    Called by ``make k8s`` (a prerequisite of ``make test``) and by ``LocalApiServer.up`` / the Helm runner.
    """
    bin_dir = ensure_go_tools(CACHE_KEY, _builds(),
                              f"the Kubernetes test bed (Helm {HELM_VERSION}, kube-apiserver {KUBE_VERSION}, "
                              f"etcd {ETCD_VERSION})")
    return K8sBinaries(helm=bin_dir / "helm", etcd=bin_dir / "etcd", kube_apiserver=bin_dir / "kube-apiserver")
