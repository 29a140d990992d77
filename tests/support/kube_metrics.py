"""A stand-in for a cluster's container exporters, for the on-call dashboard's USE panels.

In a cluster run by kube-prometheus, container CPU, throttling and memory come from cAdvisor
(scraped through the kubelet, `job="kubelet"`, `metrics_path="/metrics/cadvisor"`) and resource
limits and restarts from kube-state-metrics (`job="kube-state-metrics"`); both are scraped with
`honor_labels`, so the series keep the `namespace`, `pod` and `container` of the exposition.
Locally neither exists: `KubeExporters` serves a small exposition of the same names and label
sets on two paths, for the test's Prometheus to scrape like the real ones. The limits are the
Deployments' own (k8s/base), the counters grow with time at fixed rates, and beside the two
Gatehouse pods there are the series a real node also has and the dashboard must leave out: the
pod-level cgroup (`container=""`), the pause container (`container="POD"`) and another pod of the
namespace.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

from tests.support.rules import ROOT

# The exporter of every series a dashboard may read from the cluster (docs/observability.md).
KUBERNETES_SERIES = {
    "container_cpu_usage_seconds_total": "cAdvisor (kubelet)",
    "container_cpu_cfs_periods_total": "cAdvisor (kubelet)",
    "container_cpu_cfs_throttled_periods_total": "cAdvisor (kubelet)",
    "container_memory_working_set_bytes": "cAdvisor (kubelet)",
    "kube_pod_container_resource_limits": "kube-state-metrics",
    "kube_pod_container_status_restarts_total": "kube-state-metrics",
}
CADVISOR_PATH, KSM_PATH = "/metrics/cadvisor", "/metrics"
NODE = "node-a"


@dataclass(frozen=True)
class Container:
    pod: str
    container: str
    cpu_limit: float  # cores
    memory_limit: float  # bytes
    cpu_rate: float  # cores used
    throttled: float  # share of CFS periods throttled
    working_set: float  # bytes
    restarts: int


def quantity(value: str) -> float:
    """A Kubernetes quantity (`500m`, `1`, `384Mi`) as a number."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def deployment_limits(name: str) -> tuple[str, float, float]:
    """(container name, CPU limit in cores, memory limit in bytes) of k8s/base/<name>.yaml."""
    document = yaml.safe_load((ROOT / "k8s" / "base" / f"{name}.yaml").read_text())
    [container] = document["spec"]["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    return container["name"], quantity(str(limits["cpu"])), quantity(str(limits["memory"]))


def gatehouse_containers(api_pod: str, worker_pod: str) -> list[Container]:
    api, api_cpu, api_memory = deployment_limits("api-deployment")
    worker, worker_cpu, worker_memory = deployment_limits("worker-deployment")
    return [
        Container(api_pod, api, api_cpu, api_memory, 0.35, 0.1, 0.6 * api_memory, 2),
        Container(
            worker_pod, worker, worker_cpu, worker_memory, 0.05, 0.0, 0.25 * worker_memory, 0
        ),
    ]


class KubeExporters:
    """cAdvisor's and kube-state-metrics' expositions for `containers` in `namespace`."""

    def __init__(self, namespace: str, containers: list[Container]) -> None:
        self.namespace = namespace
        self.containers = containers
        self.started = time.monotonic()
        exporters = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                pages = {CADVISOR_PATH: exporters.cadvisor, KSM_PATH: exporters.kube_state}
                if self.path not in pages:
                    self.send_error(404)
                    return
                body = pages[self.path]().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()

    def _labels(self, pod: str, container: str, **extra: str) -> str:
        labels = {"namespace": self.namespace, "pod": pod, "container": container, **extra}
        return ",".join(f'{k}="{v}"' for k, v in labels.items())

    def cadvisor(self) -> str:
        elapsed = 100.0 + time.monotonic() - self.started
        periods = 10.0 * elapsed  # the CFS period is 100 ms
        lines = [
            "# TYPE container_cpu_usage_seconds_total counter",
            "# TYPE container_cpu_cfs_periods_total counter",
            "# TYPE container_cpu_cfs_throttled_periods_total counter",
            "# TYPE container_memory_working_set_bytes gauge",
        ]
        others = [("postgres-0", "postgres", 0.5, 0.3, 2e8)]
        rows = [
            (c.pod, c.container, c.cpu_rate, c.throttled, c.working_set) for c in self.containers
        ]
        for pod, container, cpu, throttled, memory in rows + others:
            image = f"registry.example.com/{container}:1.0"
            cgroup = f"/kubepods.slice/kubepods-burstable-pod{pod}.slice"
            labels = self._labels(pod, container, id=f"{cgroup}/cri-containerd-{container}.scope")
            labels += f',image="{image}",name="{container}-{pod}"'
            # The pod's own cgroup (container="") sums its containers; the pause container is
            # "POD". A dashboard that does not exclude them counts the pod twice.
            pod_level = self._labels(pod, "", id=cgroup)
            pause = self._labels(pod, "POD", id=f"{cgroup}/cri-containerd-pause.scope")
            for series in (labels, pod_level):
                lines += [
                    f"container_cpu_usage_seconds_total{{{series}}} {cpu * elapsed:.6f}",
                    f"container_cpu_cfs_periods_total{{{series}}} {periods:.0f}",
                    f"container_cpu_cfs_throttled_periods_total{{{series}}} "
                    f"{throttled * periods:.0f}",
                    f"container_memory_working_set_bytes{{{series}}} {memory:.0f}",
                ]
            lines += [
                f"container_cpu_usage_seconds_total{{{pause}}} {0.001 * elapsed:.6f}",
                f"container_memory_working_set_bytes{{{pause}}} 1048576",
            ]
        return "\n".join(lines) + "\n"

    def kube_state(self) -> str:
        lines = [
            "# TYPE kube_pod_container_resource_limits gauge",
            "# TYPE kube_pod_container_status_restarts_total counter",
        ]
        others = [Container("postgres-0", "postgres", 2.0, 2**31, 0.5, 0.3, 2e8, 0)]
        for c in self.containers + others:
            uid = f'uid="{uuid.uuid5(uuid.NAMESPACE_DNS, c.pod)}"'
            base = self._labels(c.pod, c.container, node=NODE) + "," + uid
            lines += [
                f'kube_pod_container_resource_limits{{{base},resource="cpu",unit="core"}} '
                f"{c.cpu_limit}",
                f'kube_pod_container_resource_limits{{{base},resource="memory",unit="byte"}} '
                f"{c.memory_limit:.0f}",
                f"kube_pod_container_status_restarts_total{{{base}}} {c.restarts}",
            ]
        return "\n".join(lines) + "\n"

    def scrape_configs(self) -> list[dict[str, Any]]:
        """The two jobs as kube-prometheus' ServiceMonitors scrape them (honor_labels)."""
        return [
            {
                "job_name": "kubelet",
                "honor_labels": True,
                "metrics_path": CADVISOR_PATH,
                "static_configs": [
                    {
                        "targets": [self.target],
                        "labels": {
                            "metrics_path": CADVISOR_PATH,
                            "endpoint": "https-metrics",
                            "service": "kubelet",
                            "node": NODE,
                        },
                    }
                ],
            },
            {
                "job_name": "kube-state-metrics",
                "honor_labels": True,
                "metrics_path": KSM_PATH,
                "static_configs": [
                    {
                        "targets": [self.target],
                        "labels": {"endpoint": "http", "service": "kube-state-metrics"},
                    }
                ],
            },
        ]
