"""Check a generated chart with Helm's own linter and renderer (helm-python-sdk) and every rendered
manifest with Kubernetes' schemas (kubernetes-validate, offline, strict).

usage: check_chart.py CHART_DIR
Prints one line per check; exits non-zero on the first failure.
"""
import sys

import yaml
import helm_python.chart as hc
import kubernetes_validate

chart_dir = sys.argv[1]
lint = hc.lint(chart_dir)
errors = lint.get("errors") or []
# Helm's severities: 1 info, 2 warning, 3 error.
msgs = [m for m in (lint.get("messages") or []) if m.get("severity", 0) >= 2]
if errors or msgs:
    sys.exit(f"lint: {errors} {msgs}")
print("lint ok")

chart = hc.Chart.load(chart_dir)
values = yaml.safe_load(open(f"{chart_dir}/values.yaml"))
volume_keys = [k for k in values if k.startswith("volume")]
kinds = {"deployment": "Deployment", "statefulset": "StatefulSet", "daemonset": "DaemonSet", "job": "Job"}
for wt, kind in kinds.items():
    if volume_keys and wt == "daemonset":
        continue
    for mode in ["fuse", "staged"]:
        for persist in [True, False]:
            v = {"workloadType": wt, "veil": {"volumeMode": mode}}
            for k in volume_keys:
                v[k] = {"persistence": {"enabled": persist}}
            out = chart.render(v, name="rel", namespace="ns")
            docs = []
            for path, text in out.items():
                if path.endswith("NOTES.txt"):
                    continue
                docs += [d for d in yaml.safe_load_all(text) if d]
            found = [d["kind"] for d in docs]
            if kind not in found:
                sys.exit(f"{wt}/{mode}: no {kind} rendered: {found}")
            if volume_keys and persist and "PersistentVolumeClaim" not in found:
                sys.exit(f"{wt}/{mode}: no PersistentVolumeClaim rendered")
            for d in docs:
                kubernetes_validate.validate(d, "1.30", strict=True)
            pod = [d for d in docs if d["kind"] == kind][0]["spec"]["template"]["spec"]
            c = pod["containers"][0]
            if "@sha256:" not in c["image"]:
                sys.exit(f"image not by digest: {c['image']}")
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            if "/run/veil" not in mounts:
                sys.exit("no LAS socket mount")
            if mode == "fuse" and "/dev/fuse" not in mounts:
                sys.exit("fuse mode without /dev/fuse")
            if mode == "staged" and c.get("securityContext"):
                sys.exit("staged mode asks for privileges")
            print(f"render {wt} {mode} persistence={persist}: {sorted(set(found))} valid")

# The schema refuses what one writer per volume forbids.
for bad in [{"replicaCount": 2}, {"workloadType": "daemonset"}, {"veil": {"volumeMode": "nfs"}}]:
    if not volume_keys and "replicaCount" in bad:
        continue
    if not volume_keys and bad.get("workloadType") == "daemonset":
        continue
    try:
        chart.validate_schema(bad)
    except Exception as e:  # the SDK raises its own error type
        print(f"schema refuses {bad}: {' '.join(str(e).split())[:300]}")
        continue
    sys.exit(f"schema accepted {bad}")
