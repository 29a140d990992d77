"""Deploy an overlay: this release's migrate Job first, then everything else.

    python -m scripts.deploy k8s/overlays/prod           # apply, with kubectl's current context
    python -m scripts.deploy k8s/overlays/prod --print   # what would be applied, in that order
    python -m scripts.deploy k8s/overlays/prod --skip-migrate   # a rollback (below)

A Job's pod template is immutable: the base's `gatehouse-migrate` cannot be applied again with
another image. This script names it per release, `gatehouse-migrate-<12 hex digits of the SHA-256
of its image reference>` (the reference is tag@digest, so every image gets its own name):

- the same release applied again finds its Job: completed and unchanged, nothing runs (and if its
  TTL removed it, it runs again: `db upgrade` at head changes nothing);
- a new release gets a new Job; finished Jobs remove themselves (`ttlSecondsAfterFinished`).

Nothing is ever deleted by hand. The steps: render the overlay with kustomize; apply everything
but the Deployments (the namespace, the ConfigMap and ServiceAccount the Job needs, the Job
itself...); wait until the Job completes (up to its `activeDeadlineSeconds`) and stop if it fails;
apply the Deployments. Their rollout starts on a migrated schema; pods of the previous release
stay ready meanwhile (`/ready` accepts a schema ahead of them: migrations are expand/contract).
The Secret `gatehouse-secrets` is created beforehand, once (docs/deploy.md).

Rolling back to an older release: its pods are ready on the newer schema, but its migrate Job
would fail (`db upgrade` does not know the newer revision). `--skip-migrate` applies everything
but the Job.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Object = dict[str, Any]
MIGRATE = "migrate"  # the Job's app.kubernetes.io/component


def find_kustomize() -> list[str] | None:
    """`kubectl kustomize`, or a standalone `kustomize build`; None when neither is on PATH."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        return [kubectl, "kustomize"]
    kustomize = shutil.which("kustomize")
    if kustomize:
        return [kustomize, "build"]
    return None


def kustomize_command() -> list[str]:
    command = find_kustomize()
    if command is None:
        raise SystemExit("deploy: needs kubectl (or the kustomize binary) on PATH")
    return command


def render(overlay: Path) -> list[Object]:
    done = subprocess.run(
        [*kustomize_command(), str(overlay)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"deploy: kustomize failed for {overlay}:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def release_name(job: Object) -> str:
    """The Job's name for the image it runs: one name per image reference, at most 63 chars."""
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    suffix = hashlib.sha256(image.encode()).hexdigest()[:12]
    name = f"{job['metadata']['name']}-{suffix}"
    assert len(name) <= 63, name  # a Job's name is also a label value
    return name


@dataclass(frozen=True)
class Plan:
    job: Object  # the migrate Job, named for its release
    first: list[Object]  # applied first: everything but the Deployments, the Job included
    then: list[Object]  # applied once the Job completed: the Deployments


def plan(objects: list[Object]) -> Plan:
    """What to apply in which order, from a rendered overlay."""
    jobs = [
        o
        for o in objects
        if o["kind"] == "Job"
        and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == MIGRATE
    ]
    if len(jobs) != 1:
        raise SystemExit(f"deploy: expected one migrate Job in the render, found {len(jobs)}")
    job = copy.deepcopy(jobs[0])
    job["metadata"]["name"] = release_name(jobs[0])
    first = [job if o is jobs[0] else o for o in objects if o["kind"] != "Deployment"]
    return Plan(job, first, [o for o in objects if o["kind"] == "Deployment"])


def kubectl(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"deploy: kubectl {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def wait_for(job: Object, poll: float = 5.0) -> None:
    """Until the Job completes; exits when it fails or outlives its deadline."""
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    deadline = time.monotonic() + job["spec"].get("activeDeadlineSeconds", 900) + 60
    while time.monotonic() < deadline:
        status = json.loads(kubectl("-n", namespace, "get", "job", name, "-o", "json"))["status"]
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        if conditions.get("Complete") == "True":
            return
        if conditions.get("Failed") == "True":
            raise SystemExit(
                f"deploy: job {namespace}/{name} failed; nothing else was applied. "
                f"Its logs: kubectl -n {namespace} logs job/{name}"
            )
        time.sleep(poll)
    raise SystemExit(f"deploy: job {namespace}/{name} did not complete in time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overlay", type=Path, help="a kustomization, e.g. k8s/overlays/prod")
    parser.add_argument(
        "--print", action="store_true", help="print what would be applied, apply nothing"
    )
    parser.add_argument(
        "--skip-migrate",
        action="store_true",
        help="leave the migrate Job out (a rollback to a release older than the schema)",
    )
    args = parser.parse_args(argv)
    steps = plan(render(args.overlay))
    first = [o for o in steps.first if not (args.skip_migrate and o is steps.job)]
    if args.print:
        sys.stdout.write(yaml.safe_dump_all([*first, *steps.then], sort_keys=False))
        return 0
    print(kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(first)), end="")
    if not args.skip_migrate:
        job = steps.job["metadata"]
        print(f"deploy: waiting for job {job['namespace']}/{job['name']} (migrations)")
        wait_for(steps.job)
    print(kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(steps.then)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
