"""Keep the on-call dashboard's runbook links in step with the alert rules.

    python -m scripts.dashboard_runbooks          # rewrite the on-call dashboard
    python -m scripts.dashboard_runbooks --check  # exit 1 when it is stale (tests, CI)

Two things in that dashboard are derived, never edited by hand: the constant `runbook_base` (the
rules' one link base, `RUNBOOK_BASE_URL` of `scripts/build_k8s_generated.py`, plus
`docs/runbooks`) and the text panel listing every alert of `alertmanager/rules/*.yml` with its
severities and runbook link. After rewriting, `python -m scripts.build_k8s_generated` refreshes
the dashboard's ConfigMap.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from scripts.build_k8s_generated import ROOT, RULES_GLOB, RUNBOOK_BASE_URL

DASHBOARD = "grafana/dashboards/gatehouse-on-call.json"
RUNBOOKS = "docs/runbooks"
TABLE_HEADER = "| alert | severity | runbook |"


def runbook_base() -> str:
    return RUNBOOK_BASE_URL.rstrip("/") + "/" + RUNBOOKS


def alert_severities(root: Path = ROOT) -> dict[str, list[str]]:
    """Every alert of the rule files, in file and rule order, with its severities."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.glob(RULES_GLOB)):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group.get("rules") or []:
                if "alert" in rule:
                    severity = (rule.get("labels") or {}).get("severity", "none")
                    severities = found.setdefault(rule["alert"], [])
                    if severity not in severities:
                        severities.append(severity)
    return found


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(_panels(panel.get("panels") or []))
    return out


def render(root: Path = ROOT) -> str:
    """The dashboard's text with both derived parts brought up to date."""
    dashboard = json.loads((root / DASHBOARD).read_text(encoding="utf-8"))
    base = runbook_base()
    for variable in dashboard["templating"]["list"]:
        if variable["name"] == "runbook_base":
            variable["query"] = base
            variable["current"] = {"selected": False, "text": base, "value": base}
            variable["options"] = [{"selected": True, "text": base, "value": base}]
    rows = [TABLE_HEADER, "| --- | --- | --- |"] + [
        f"| `{alert}` | {', '.join(severities)} | [{alert}.md](${{runbook_base}}/{alert}.md) |"
        for alert, severities in alert_severities(root).items()
    ]
    for panel in _panels(dashboard["panels"]):
        content = (panel.get("options") or {}).get("content", "")
        if TABLE_HEADER in content:
            intro = content[: content.index(TABLE_HEADER)]
            panel["options"]["content"] = intro + "\n".join(rows) + "\n"
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report staleness, change nothing")
    args = parser.parse_args(argv)
    path = ROOT / DASHBOARD
    text = render()
    if path.read_text(encoding="utf-8") == text:
        return 0
    if args.check:
        print(f"stale: {DASHBOARD} (run python -m scripts.dashboard_runbooks)")
        return 1
    path.write_text(text, encoding="utf-8")
    print(f"wrote {DASHBOARD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
