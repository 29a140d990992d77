"""How a release reaches the cluster: Deployments whose size the HPAs own, a migrate Job that
`scripts/deploy.py` names per release (so applying again never needs a delete), a worker whose
liveness is its job loop's heartbeat, and images pinned by digest that Renovate keeps current."""

from __future__ import annotations

import copy
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs import health
from scripts import deploy
from tests.support.ops import OVERLAYS, ROOT, find, of_kind, output, render, run, tool, write_yaml

Objects = list[dict[str, Any]]
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


# --- the HPAs own the replica counts ------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_scaled_by_an_hpa_carry_no_replicas(
    rendered: dict[str, Objects], overlay: str
) -> None:
    """`kubectl apply` of a Deployment with `spec.replicas` resets a fleet the HPA scaled out."""
    objects = rendered[overlay]
    targets = {
        h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")
    }
    assert targets == {"gatehouse-api", "gatehouse-worker"}
    for name in targets:
        assert "replicas" not in find(objects, "Deployment", name)["spec"], name


def test_no_kustomization_sets_replicas() -> None:
    for kustomization in (ROOT / "k8s").rglob("kustomization.yaml"):
        assert "replicas" not in yaml.safe_load(kustomization.read_text()), kustomization


# --- the worker's liveness ----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_liveness_is_its_job_loop_heartbeat(
    rendered: dict[str, Objects], overlay: str
) -> None:
    pod = find(rendered[overlay], "Deployment", "gatehouse-worker")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    probe = ["python", "-m", "jobs.health"]
    for kind in ("startupProbe", "livenessProbe"):
        assert container[kind]["exec"]["command"] == probe, kind
        assert "tcpSocket" not in container[kind], kind
    # the probe reads the default file: nothing in the pod moves it elsewhere
    config = find(rendered[overlay], "ConfigMap", "gatehouse-config")["data"]
    env = {e["name"] for e in container["env"]} | set(config)
    assert health.FILE_VARIABLE not in env
    # ... which is on the pod's writable /tmp (the root filesystem is read-only)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert Path(health.DEFAULT_FILE).parent == Path("/tmp")
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # The file carries its own allowance; the kubelet adds at most two periods on top, and a slow
    # start (forking the job process, Redis) has two minutes.
    live = container["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] <= 60
    start = container["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 120
    # the grace period lets the job in hand finish (its probe stops mattering then)
    assert pod["terminationGracePeriodSeconds"] >= 60


# --- the migrate Job, named per release by scripts/deploy.py -------------------------------------


def with_image_digest(overlay: str, digest: str, tmp_path: Path) -> Objects:
    """The overlay rendered with another digest of the Gatehouse image (another release)."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                # kustomize takes no absolute root
                "resources": [os.path.relpath(ROOT / "k8s" / "overlays" / overlay, tmp_path)],
                "images": [{"name": "ghcr.io/gatehouse/gatehouse", "digest": digest}],
            }
        )
    )
    return render(tmp_path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_migrate_job_is_named_per_release(
    rendered: dict[str, Objects], overlay: str, tmp_path: Path
) -> None:
    steps = deploy.plan(rendered[overlay])
    name = steps.job["metadata"]["name"]
    assert re.fullmatch(r"gatehouse-migrate-[0-9a-f]{12}", name), name
    assert deploy.plan(rendered[overlay]).job["metadata"]["name"] == name  # same release, same Job
    image = steps.job["spec"]["template"]["spec"]["containers"][0]["image"]
    assert DIGEST.search(image), image

    other = with_image_digest(overlay, "sha256:" + "ab" * 32, tmp_path)
    assert deploy.plan(other).job["metadata"]["name"] != name  # a new image, a new Job

    # First everything but the Deployments (the Job among them), then the Deployments.
    assert steps.job in steps.first
    assert not [o for o in steps.first if o["metadata"]["name"] == "gatehouse-migrate"]
    assert {o["kind"] for o in steps.then} == {"Deployment"}
    assert len(steps.first) + len(steps.then) == len(rendered[overlay])
    assert steps.job["spec"]["ttlSecondsAfterFinished"] > 0  # finished Jobs go by themselves


def test_deploy_print_renders_the_plan_and_it_validates(
    rendered: dict[str, Objects], tmp_path: Path
) -> None:
    done = run([sys.executable, "-m", "scripts.deploy", "k8s/overlays/prod", "--print"])
    assert done.returncode == 0, output(done)
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    jobs = of_kind(objects, "Job")
    expected = deploy.plan(rendered["prod"]).job["metadata"]["name"]
    assert [j["metadata"]["name"] for j in jobs] == [expected]
    assert objects[-1]["kind"] == "Deployment"
    builtin = [o for o in objects if o["kind"] != "ServiceMonitor"]
    path = write_yaml(tmp_path / "plan.yaml", builtin)
    checked = run(
        [tool("kubernetes-validate"), "--strict", "--kubernetes-version", "1.37.0", str(path)]
    )
    assert checked.returncode == 0, output(checked)


def test_deploy_skip_migrate_leaves_the_job_out() -> None:
    """A rollback: the older release's pods are ready on the newer schema; its Job would fail."""
    command = [sys.executable, "-m", "scripts.deploy", "k8s/overlays/prod", "--print"]
    done = run([*command, "--skip-migrate"])
    assert done.returncode == 0, output(done)
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    assert not of_kind(objects, "Job")
    assert {o["metadata"]["name"] for o in of_kind(objects, "Deployment")} == {
        "gatehouse-api",
        "gatehouse-worker",
    }


def test_deploy_refuses_a_render_without_its_migrate_job(rendered: dict[str, Objects]) -> None:
    objects = [o for o in copy.deepcopy(rendered["prod"]) if o["kind"] != "Job"]
    with pytest.raises(SystemExit, match="one migrate Job"):
        deploy.plan(objects)


# --- images by digest, kept current by Renovate --------------------------------------------------

RENOVATE = ROOT / ".github" / "renovate.json"


def test_renovate_config_is_valid_and_pins_digests() -> None:
    done = run([tool("check-jsonschema"), "--builtin-schema", "vendor.renovate", str(RENOVATE)])
    assert done.returncode == 0, output(done)
    config = yaml.safe_load(RENOVATE.read_text())  # JSON is YAML
    assert config["pinDigests"] is True
    # the managers that read the Dockerfile's FROM lines and kustomize's `images:`
    assert {"dockerfile", "kustomize"} <= set(config["enabledManagers"])


def test_the_renovate_schema_rejects_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "renovate.json"
    bad.write_text('{"pinDigests": "yes", "enabledManagers": "dockerfile"}')
    done = run([tool("check-jsonschema"), "--builtin-schema", "vendor.renovate", str(bad)])
    assert done.returncode != 0


def test_every_kustomize_image_entry_carries_a_digest() -> None:
    """What Renovate's kustomize manager updates: each overlay's Gatehouse image and the base's
    other images (the base's Gatehouse entry only names the image; every overlay pins it)."""
    base = yaml.safe_load((ROOT / "k8s" / "base" / "kustomization.yaml").read_text())
    for entry in base["images"]:
        if entry["name"] != "gatehouse":
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", entry["digest"]), entry
    for overlay in OVERLAYS:
        path = ROOT / "k8s" / "overlays" / overlay / "kustomization.yaml"
        (entry,) = yaml.safe_load(path.read_text())["images"]
        assert entry["name"] == "ghcr.io/gatehouse/gatehouse"
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", entry["digest"]), overlay
