"""Checks deploy/kubernetes against the Kubernetes schemas and against the policy.

Run by tests/e2e/deploy.rs as:  python check_kubernetes.py REPO FACTS_JSON
FACTS_JSON is what sitegate itself makes of config/sitegate.toml: the policy's files
(relative to config/), its ports, shutdown_grace and buffer_budget. Every problem is
printed; the exit status is 1 when there is any.
"""

import json
import os
import re
import sys

import kubernetes_validate
import yaml

# The oldest Kubernetes the manifests are for, as the README states it (checked below).
MINIMUM = "1.30"
# A version's schema cannot see feature gates: it takes a field whose feature is still
# off by default in that release. So each gated field the manifests use is listed with
# the release that turned its feature on by default, and MINIMUM must be the newest of
# them. The newest schemas catch fields that were since removed.
FEATURES = [
    ("initContainers[].restartPolicy (native sidecars, SidecarContainers)", "1.29",
     lambda pod: any("restartPolicy" in c for c in pod.get("initContainers", []))),
    ("lifecycle.*.sleep (PodLifecycleSleepAction)", "1.30",
     lambda pod: any("sleep" in hook for c in pod.get("initContainers", []) + pod["containers"]
                     for hook in c.get("lifecycle", {}).values())),
]
KUBERNETES_VERSIONS = [MINIMUM + ".0", "1.37.0"]
MEMORY_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}

problems = []


def problem(msg):
    problems.append(msg)


def load_yaml(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def validate(doc, where):
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problem(f"{where}: invalid for Kubernetes {version}: {e.message} at {list(e.path)}")


def memory_bytes(q):
    for unit, factor in MEMORY_UNITS.items():
        if q.endswith(unit):
            return int(q[: -len(unit)]) * factor
    return int(q)


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def main():
    repo, facts = sys.argv[1], json.loads(sys.argv[2])
    kdir = os.path.join(repo, "deploy", "kubernetes")
    kust = load_yaml(os.path.join(kdir, "kustomization.yaml"))[0]

    # The ConfigMap the base generates, rebuilt the way kustomize does it.
    config_dir = os.path.normpath(os.path.join(kdir, "../../config"))
    if "../../config" not in kust.get("resources", []):
        problem("deploy/kubernetes/kustomization.yaml does not include ../../config")
    base = load_yaml(os.path.join(config_dir, "kustomization.yaml"))[0]
    if not base.get("generatorOptions", {}).get("disableNameSuffixHash"):
        problem("config/kustomization.yaml: without disableNameSuffixHash a policy change rolls the pods instead of reloading")
    generators = base.get("configMapGenerator", [])
    if len(generators) != 1:
        problem("config/kustomization.yaml: expected one configMapGenerator")
        return
    gen = generators[0]
    generated = {}
    for f in gen.get("files", []):
        with open(os.path.join(config_dir, f)) as fh:
            generated[os.path.basename(f)] = (f, fh.read())
    if set(f for f, _ in generated.values()) != set(facts["files"]):
        problem(f"config/kustomization.yaml packs {sorted(f for f, _ in generated.values())}, the policy is {sorted(facts['files'])}")
    validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]},
         "data": {k: v for k, (_, v) in generated.items()}},
        "generated ConfigMap",
    )

    docs = []
    for res in kust.get("resources", []):
        if res.endswith(".yaml"):
            for doc in load_yaml(os.path.join(kdir, res)):
                validate(doc, res)
                docs.append(doc)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    service = next(d for d in docs if d["kind"] == "Service")
    pod = deployment["spec"]["template"]["spec"]
    check_minimum(repo, [pod])
    for c in pod.get("initContainers", []) + pod["containers"]:
        for m in c.get("volumeMounts", []):
            if "subPath" in m or "subPathExpr" in m:
                problem(f"container {c['name']} mounts {m['name']} with subPath: it never sees a ConfigMap update")
    sidecars = [c for c in pod.get("initContainers", []) if c["name"] == "sitegate"]
    if len(sidecars) != 1:
        problem("no init container named sitegate")
        return
    sg = sidecars[0]
    if sg.get("restartPolicy") != "Always":
        problem("sitegate is not a native sidecar (initContainers[].restartPolicy: Always)")

    env = {e["name"]: e.get("value") for e in sg.get("env", [])}
    # [audit] reads sitegate's environment: it must see everything the app is given.
    sg_from = {(k, ref["name"]) for s in sg.get("envFrom", []) for k, ref in s.items()}
    generated_env = {g["name"] for g in kust.get("configMapGenerator", [])}
    for c in pod["containers"]:
        for s in c.get("envFrom", []):
            for k, ref in s.items():
                if (k, ref["name"]) not in sg_from:
                    problem(f"container {c['name']} gets {k} {ref['name']}, sitegate does not: [audit] cannot check it")
                if k == "configMapRef" and ref["name"] not in generated_env:
                    problem(f"container {c['name']} reads ConfigMap {ref['name']}, which kustomization.yaml does not generate")
        for e in c.get("env", []):
            if env.get(e["name"], object()) != e.get("value"):
                problem(f"container {c['name']} sets {e['name']}, sitegate does not see it: move it to the env ConfigMap")
    ports = {p["name"]: p["containerPort"] for p in sg.get("ports", [])}
    for var, name, key in [("SITEGATE_LISTEN", "proxy", "listen_port"), ("SITEGATE_ADMIN_LISTEN", "admin", "admin_port")]:
        addr = env.get(var)
        if addr is None or not addr.startswith("0.0.0.0:"):
            problem(f"{var} must bind 0.0.0.0 in a pod (the Service and kubelet arrive on the pod IP), is {addr!r}")
            continue
        if port_of(addr) != ports.get(name):
            problem(f"{var} port {port_of(addr)} differs from containerPort {name}={ports.get(name)}")
        if port_of(addr) != facts[key]:
            problem(f"{var} port {port_of(addr)} differs from the policy's {facts[key]}")

    targets = [p["targetPort"] for p in service["spec"]["ports"]]
    for t in targets:
        if ports.get(t, t) != ports.get("proxy"):
            problem(f"the Service targets {t}, not sitegate's proxy port")
    if service["spec"]["selector"].items() - pod_labels(deployment).items():
        problem("the Service selector does not match the pod labels")
    for kind in ["PodDisruptionBudget", "NetworkPolicy"]:
        found = [d for d in docs if d["kind"] == kind]
        if len(found) != 1:
            problem(f"expected one {kind}, found {len(found)}")
            continue
        selector = found[0]["spec"].get("selector") or found[0]["spec"].get("podSelector")
        if selector.get("matchLabels", {}).items() - pod_labels(deployment).items():
            problem(f"the {kind} selects no pod of the Deployment")
    pdb = next((d for d in docs if d["kind"] == "PodDisruptionBudget"), None)
    if pdb and pdb["spec"].get("minAvailable", 0) >= deployment["spec"].get("replicas", 1):
        problem("the PodDisruptionBudget's minAvailable leaves no pod to drain")
    netpol = next((d for d in docs if d["kind"] == "NetworkPolicy"), None)
    if netpol:
        admitted = {p["port"] for rule in netpol["spec"].get("ingress", []) for p in rule.get("ports", [])}
        # Named ports must name sitegate's: a port named nowhere admits nothing.
        for port in admitted:
            if isinstance(port, str) and port not in {p["name"] for c in pod.get("initContainers", []) for p in c.get("ports", [])}:
                problem(f"the NetworkPolicy admits port {port!r}, which no container names")
        if admitted != {"proxy", "admin"}:
            problem(f"the NetworkPolicy admits {sorted(map(str, admitted))}, expected exactly proxy and admin")

    probes = {k: sg.get(k, {}).get("httpGet", {}) for k in ["startupProbe", "livenessProbe", "readinessProbe"]}
    want = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for k, path in want.items():
        p = probes[k]
        if p.get("path") != path:
            problem(f"sitegate {k} path is {p.get('path')!r}, want {path}")
        if ports.get(p.get("port"), p.get("port")) != facts["admin_port"]:
            problem(f"sitegate {k} port {p.get('port')!r} is not the admin port {facts['admin_port']}")

    args = sg.get("args", [])
    config = args[args.index("--config") + 1] if "--config" in args else None
    mounts = {m["name"]: m for m in sg.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    policy_mounts = [m for m in mounts.values() if "configMap" in volumes.get(m["name"], {})]
    if len(policy_mounts) != 1:
        problem("sitegate mounts no policy ConfigMap")
        return
    mount = policy_mounts[0]
    if config != os.path.join(mount["mountPath"], facts["main"]):
        problem(f"--config {config} is not {facts['main']} in the mounted {mount['mountPath']}")
    cm = volumes[mount["name"]]["configMap"]
    if cm["name"] != gen["name"]:
        problem(f"the volume mounts ConfigMap {cm['name']}, the base generates {gen['name']}")
    items = {i["key"]: i["path"] for i in cm.get("items", [])}
    packed = {k: f for k, (f, _) in generated.items()}
    if items != packed:
        problem(f"the volume's items {items} do not put every generated key at the path the policy names {packed}")

    grace = pod.get("terminationGracePeriodSeconds", 30)
    sleeps = sum(c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0) for c in pod["containers"])
    if grace < facts["shutdown_grace_secs"] + sleeps:
        problem(f"terminationGracePeriodSeconds {grace} < shutdown_grace {facts['shutdown_grace_secs']} + preStop sleeps {sleeps}")

    limit = sg.get("resources", {}).get("limits", {}).get("memory")
    if limit is None or memory_bytes(limit) <= facts["buffer_budget"]:
        problem(f"sitegate memory limit {limit} is not above buffer_budget {facts['buffer_budget']} bytes")
    if "requests" not in sg.get("resources", {}):
        problem("sitegate has no resource requests")

    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        if not (sc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem")
                and sc.get("allowPrivilegeEscalation") is False
                and sc.get("capabilities", {}).get("drop") == ["ALL"]):
            problem(f"container {c['name']}: securityContext must be non-root, read-only root, no privilege escalation, drop ALL")


def version(v):
    return tuple(int(x) for x in v.split("."))


def check_minimum(repo, pods):
    used = [(name, since) for name, since, uses in FEATURES if any(uses(p) for p in pods)]
    for name, since in used:
        if version(since) > version(MINIMUM):
            problem(f"{name} is on by default only from Kubernetes {since}, the stated minimum is {MINIMUM}")
    newest = max((since for _, since in used), key=version, default=None)
    if newest is not None and version(newest) < version(MINIMUM):
        problem(f"the newest feature used needs {newest}, but the minimum is stated as {MINIMUM}")
    with open(os.path.join(repo, "README.md")) as f:
        readme = f.read()
    stated = set(re.findall(r"Kubernetes (1\.\d+) or later", readme))
    if stated != {MINIMUM}:
        problem(f"README.md states Kubernetes {sorted(stated)} or later, the manifests need {MINIMUM}")


def pod_labels(deployment):
    return deployment["spec"]["template"]["metadata"]["labels"]


main()
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
