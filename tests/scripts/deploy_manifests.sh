#!/usr/bin/env bash
# deploy/: renders the base and every overlay with `kubectl kustomize` and checks the safety
# properties of what would be applied: webhook failure policies, reinvocation, side effects,
# timeouts, namespace exclusions, the rules (*/scale, HPAs, DELETE), least-privilege RBAC,
# the hardened pod, probes, PDB and replicas, the recommender CronJob, the overlays'
# differences, and that the ConfigMaps hold what the webhook accepts (the real binary checks
# the recommendations literal and lints the policies when SIZEGUARD_BINARY is set).
#
# Rendered YAML is read with PyYAML when it is installed; otherwise kubectl turns it into JSON
# itself (`kubectl annotate --local -o json`, which needs no cluster, CRDs included).
# SIZEGUARD_RENDER=kubectl forces that path.
set -euo pipefail
src=${SIZEGUARD_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
command -v kubectl >/dev/null || { echo "SKIP: kubectl not found"; exit 0; }
command -v python3 >/dev/null || { echo "SKIP: python3 not found"; exit 0; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

reader=kubectl
if [[ ${SIZEGUARD_RENDER:-} != kubectl ]] && python3 -c 'import yaml' 2>/dev/null; then reader=pyyaml; fi

# render NAME DIR: writes $work/NAME.json, a JSON array of the rendered objects.
render() {
  local name=$1 dir=$2
  kubectl kustomize "$dir" > "$work/$name.yaml" 2> "$work/$name.err" \
    || { cat "$work/$name.err" >&2; fail "kubectl kustomize $dir failed"; }
  if [[ $reader == pyyaml ]]; then
    python3 -c 'import json,sys,yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)' \
      "$work/$name.yaml" > "$work/$name.json"
  else
    # One JSON object per document; the marker annotation is removed again below.
    KUBECONFIG=/dev/null kubectl annotate --local -f "$work/$name.yaml" -o json sizeguard.io/rendered-by-test=1 \
      > "$work/$name.stream" 2> "$work/$name.err" || { cat "$work/$name.err" >&2; fail "kubectl cannot read $dir"; }
    python3 - "$work/$name.stream" > "$work/$name.json" <<'PY'
import json, sys
text, docs, i = open(sys.argv[1]).read(), [], 0
decoder = json.JSONDecoder()
while True:
    while i < len(text) and text[i].isspace(): i += 1
    if i >= len(text): break
    obj, i = decoder.raw_decode(text, i)
    docs.extend(obj["items"] if obj.get("kind") == "List" else [obj])
for d in docs:
    ann = d.get("metadata", {}).get("annotations", {})
    ann.pop("sizeguard.io/rendered-by-test", None)
    if not ann: d["metadata"].pop("annotations", None)
print(json.dumps(docs))
PY
  fi
  [[ -s $work/$name.json ]] || fail "rendering $dir produced nothing"
}

variants=(base audit-only cert-manager validate-ignore)
render base "$src/deploy/base"
for overlay in "${variants[@]:1}"; do
  [[ -d $src/deploy/overlays/$overlay ]] || fail "deploy/overlays/$overlay is missing"
  render "$overlay" "$src/deploy/overlays/$overlay"
done

python3 - "$work" "$src" "${variants[@]}" <<'PY'
import json, os, re, sys

work, src, variants = sys.argv[1], sys.argv[2], sys.argv[3:]
errors = []
NS = "sizeguard-system"

def check(cond, what):
    if not cond:
        errors.append(f"[{current}] {what}")
    return cond

def find(docs, kind, name=None):
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"].get("name") == name)]

def one(docs, kind, name):
    found = find(docs, kind, name)
    check(len(found) == 1, f"expected exactly one {kind} {name}, found {len(found)}")
    return found[0] if found else {}

dockerfile = open(os.path.join(src, "deploy/Dockerfile")).read()
image_dirs = re.findall(r"^COPY\s+(?:--from=\S+\s+)?\S+\s+(/\S+)", dockerfile, re.M)

EXCLUDED = {"kube-system", "kube-public", "kube-node-lease", NS}

def check_namespace_selector(w):
    sel = w.get("namespaceSelector", {})
    exprs = sel.get("matchExpressions", [])
    names = [e for e in exprs if e.get("key") == "kubernetes.io/metadata.name" and e.get("operator") == "NotIn"]
    check(names and EXCLUDED <= set(names[0].get("values", [])),
          f"{w['name']}: namespaceSelector does not exclude {sorted(EXCLUDED)}")
    check(any(e.get("key") == "sizeguard.io/ignore" and e.get("operator") == "DoesNotExist" for e in exprs),
          f"{w['name']}: namespaceSelector lacks sizeguard.io/ignore DoesNotExist (emergency bypass)")
    check(not sel.get("matchLabels"), f"{w['name']}: matchLabels would limit the webhook to labelled namespaces")

def covered(w):
    """(group, resource, operation) triples the webhook's rules match."""
    out = set()
    for r in w.get("rules", []):
        check(r.get("scope", "*") in ("Namespaced", "*"), f"{w['name']}: rule scope {r.get('scope')}")
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for op in r.get("operations", []):
                    out.add((g, res, op))
    return out

def check_common_webhook(w, path):
    check("v1" in w.get("admissionReviewVersions", []), f"{w['name']}: admissionReviewVersions lacks v1")
    check(w.get("matchPolicy") == "Equivalent", f"{w['name']}: matchPolicy {w.get('matchPolicy')}, want Equivalent")
    t = w.get("timeoutSeconds")
    check(isinstance(t, int) and 1 <= t <= 5, f"{w['name']}: timeoutSeconds {t}, want 1..5")
    svc = w.get("clientConfig", {}).get("service", {})
    check(svc.get("name") == "sizeguard" and svc.get("namespace") == NS and svc.get("path") == path
          and svc.get("port", 443) == 443, f"{w['name']}: clientConfig.service {svc}")
    check("url" not in w.get("clientConfig", {}), f"{w['name']}: clientConfig.url in the manifests")
    check_namespace_selector(w)

def policy_documents(cm):
    """Policy YAML files of the policies ConfigMap, as text."""
    return cm.get("data", {})

for current in variants:
    docs = json.load(open(os.path.join(work, current + ".json")))

    # --- Namespaced objects all land in sizeguard-system; the namespace skips itself.
    cluster_kinds = {"Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
                     "ValidatingWebhookConfiguration"}
    for d in docs:
        if d["kind"] not in cluster_kinds:
            check(d["metadata"].get("namespace") == NS, f"{d['kind']} {d['metadata']['name']} not in {NS}")
    ns = one(docs, "Namespace", NS)
    labels = ns.get("metadata", {}).get("labels", {})
    check("sizeguard.io/ignore" in labels, "namespace lacks the sizeguard.io/ignore label")
    check(labels.get("pod-security.kubernetes.io/enforce") == "restricted", "namespace is not PSS restricted")

    # --- Webhook configurations.
    mwc = one(docs, "MutatingWebhookConfiguration", "sizeguard")
    vwc = one(docs, "ValidatingWebhookConfiguration", "sizeguard")
    for w in mwc.get("webhooks", []):
        check_common_webhook(w, "/mutate")
        check(w.get("failurePolicy") == "Ignore", f"{w['name']}: failurePolicy {w.get('failurePolicy')}, want Ignore")
        check(w.get("reinvocationPolicy") == "IfNeeded", f"{w['name']}: reinvocationPolicy {w.get('reinvocationPolicy')}")
        check(w.get("sideEffects") == "None", f"{w['name']}: sideEffects {w.get('sideEffects')}, want None")
        c = covered(w)
        check(("", "pods", "CREATE") in c, "mutating: pods CREATE not matched")
        for g, res in [("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"), ("apps", "replicasets"),
                       ("", "replicationcontrollers"), ("batch", "jobs"), ("batch", "cronjobs")]:
            for op in ("CREATE", "UPDATE"):
                check((g, res, op) in c, f"mutating: {res} {op} not matched")
        check(not any(op == "DELETE" for _, _, op in c), "mutating webhook matches DELETE (nothing to mutate)")
        # matchConditions (issue 19): calls that cannot change anything are not sent.
        conds = {m["name"]: " ".join(m["expression"].split()) for m in w.get("matchConditions", [])}
        check(set(conds) == {"rightsize-not-off", "not-a-job-update"}, f"mutating matchConditions {sorted(conds)}")
        off = conds.get("rightsize-not-off", "")
        check(off.startswith("!has(object.metadata.annotations) ||") and "!= 'off'" in off,
              f"mutating rightsize-not-off must tolerate objects without annotations and skip only 'off': {off}")
        check(conds.get("not-a-job-update") == "!(request.resource.resource == 'jobs' && request.operation == 'UPDATE')",
              f"mutating not-a-job-update: {conds.get('not-a-job-update')}")
    check(len(mwc.get("webhooks", [])) >= 1, "mutating configuration has no webhooks")

    want_validate = "Ignore" if current in ("validate-ignore", "audit-only") else "Fail"
    for w in vwc.get("webhooks", []):
        check_common_webhook(w, "/validate")
        check(w.get("failurePolicy") == want_validate,
              f"{w['name']}: failurePolicy {w.get('failurePolicy')}, want {want_validate}")
        check(w.get("sideEffects") == "NoneOnDryRun", f"{w['name']}: sideEffects {w.get('sideEffects')}, want NoneOnDryRun")
        check("reinvocationPolicy" not in w, f"{w['name']}: reinvocationPolicy on a validating webhook")
        # Only no-op UPDATEs are skipped: CREATE and DELETE (object null) short-circuit
        # first, and every guard makes the expression unable to fail (failurePolicy Fail).
        conds = {m["name"]: " ".join(m["expression"].split()) for m in w.get("matchConditions", [])}
        check(set(conds) == {"not-a-no-op-update"}, f"validating matchConditions {sorted(conds)}")
        noop = conds.get("not-a-no-op-update", "")
        check(noop.startswith("request.operation != 'UPDATE' || object == null || oldObject == null ||"),
              f"validating not-a-no-op-update must pass every non-UPDATE first: {noop}")
        for needed in ("object.spec != oldObject.spec", "object.metadata.labels != oldObject.metadata.labels",
                       "object.metadata.annotations != oldObject.metadata.annotations"):
            check(needed in noop, f"validating not-a-no-op-update lacks {needed}")
        c = covered(w)
        for g, res in [("apps", "deployments/scale"), ("apps", "statefulsets/scale"), ("apps", "replicasets/scale"),
                       ("", "replicationcontrollers/scale")]:
            check((g, res, "UPDATE") in c, f"validating: {res} UPDATE not matched (kubectl scale, agents)")
        for op in ("CREATE", "UPDATE", "DELETE"):
            check(("autoscaling", "horizontalpodautoscalers", op) in c, f"validating: HPA {op} not matched")
            for g, res in [("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"),
                           ("apps", "replicasets"), ("", "replicationcontrollers"), ("batch", "jobs"), ("batch", "cronjobs")]:
                check((g, res, op) in c, f"validating: {res} {op} not matched")
        check(("", "pods", "CREATE") in c, "validating: pods CREATE not matched (GPU totals, resource rules)")
        check(("", "pods", "DELETE") not in c, "validating: pod DELETE matched (would stall drains when down)")
        hpa_versions = {v for r in w.get("rules", []) if "autoscaling" in r.get("apiGroups", []) for v in r.get("apiVersions", [])}
        check("v2" in hpa_versions, "validating: HPA rule lacks autoscaling/v2")
    check(len(vwc.get("webhooks", [])) >= 1, "validating configuration has no webhooks")

    # caBundle is never in the manifests (install.sh / cert-manager fill it in).
    for cfg in (mwc, vwc):
        for w in cfg.get("webhooks", []):
            check("caBundle" not in w.get("clientConfig", {}), f"{w['name']}: caBundle in the manifests")

    # --- Deployment.
    dep = one(docs, "Deployment", "sizeguard")
    spec = dep.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    check(spec.get("replicas", 1) >= 2, f"replicas {spec.get('replicas')}, want >= 2")
    check(spec.get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") == 0, "rolling update may take a replica down first")
    tsc = pod.get("topologySpreadConstraints", [])
    check(any(t.get("topologyKey") == "kubernetes.io/hostname" and t.get("whenUnsatisfiable") == "ScheduleAnyway"
              and t.get("labelSelector", {}).get("matchLabels") == spec.get("selector", {}).get("matchLabels")
              for t in tsc), "no hostname topologySpreadConstraint (ScheduleAnyway) on the pod labels")
    check(pod.get("serviceAccountName") == "sizeguard", "Deployment does not run as ServiceAccount sizeguard")
    containers = pod.get("containers", [])
    check(len(containers) == 1, f"{len(containers)} containers, want 1")
    c = containers[0] if containers else {}
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    eff = lambda k: csc.get(k, psc.get(k))
    check(eff("runAsNonRoot") is True, "runAsNonRoot is not true")
    check(eff("runAsUser") == 65532, f"runAsUser {eff('runAsUser')}, want 65532")
    check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true")
    check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
    check(csc.get("privileged", False) is False, "privileged container")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities do not drop ALL")
    check(not csc.get("capabilities", {}).get("add"), "capabilities added")
    check((eff("seccompProfile") or {}).get("type") == "RuntimeDefault", "seccompProfile is not RuntimeDefault")
    check(not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), "host namespaces used")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    args = c.get("args", [])
    check(ports.get("metrics") == 9090 and "--metrics-listen=:9090" in args, "metrics port is not 9090 / --metrics-listen=:9090")
    check(ports.get("https") == 8443 and "--listen=:8443" in args, "webhook port is not 8443 / --listen=:8443")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        g = c.get(probe, {}).get("httpGet", {})
        check(g.get("path") == path and g.get("port") in ("metrics", 9090) and g.get("scheme", "HTTP") == "HTTP",
              f"{probe}: {g}, want GET {path} on the metrics port")
    res = c.get("resources", {})
    check(res.get("requests", {}).get("cpu") == "100m", f"cpu request {res.get('requests', {}).get('cpu')}, want 100m")
    check(res.get("requests", {}).get("memory") == "64Mi", f"memory request {res.get('requests', {}).get('memory')}, want 64Mi")
    check(res.get("limits", {}).get("memory") == "256Mi", f"memory limit {res.get('limits', {}).get('memory')}, want 256Mi")
    check(args[:1] == ["serve"], f"args do not start with serve: {args[:1]}")
    flags = dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)
    check(flags.get("--recommendations") == "/etc/sizeguard/recommendations/recommendations.json", "--recommendations flag")
    model = flags.get("--model", "")
    check(model and any(model == d.rstrip("/") for d in image_dirs),
          f"--model={model} is not a directory deploy/Dockerfile copies into the image ({image_dirs})")
    check(pod.get("terminationGracePeriodSeconds", 30) > float(flags.get("--drain-timeout", "0").rstrip("s") or 0),
          "--drain-timeout is not below terminationGracePeriodSeconds")
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    check(set(mounts) <= set(volumes), f"mounts without volumes: {set(mounts) - set(volumes)}")
    def mounted_at(flag_path, volume_check, what):
        for name, m in mounts.items():
            if flag_path.startswith(m["mountPath"].rstrip("/") + "/") and volume_check(volumes.get(name, {})):
                check(m.get("readOnly") is True, f"{what} mount is not readOnly")
                return True
        return check(False, f"{flag_path} is not on a {what} volume")
    mounted_at(flags.get("--tls-cert", ""), lambda v: v.get("secret", {}).get("secretName") == "sizeguard-tls", "Secret sizeguard-tls")
    mounted_at(flags.get("--tls-key", ""), lambda v: v.get("secret", {}).get("secretName") == "sizeguard-tls", "Secret sizeguard-tls")
    mounted_at(flags.get("--policies", "") + "/x", lambda v: v.get("configMap", {}).get("name") == "sizeguard-policies", "ConfigMap sizeguard-policies")
    mounted_at(flags.get("--recommendations", ""), lambda v: v.get("configMap", {}).get("name") == "sizeguard-recommendations",
               "ConfigMap sizeguard-recommendations")
    check(any(m["mountPath"] == "/tmp" and "emptyDir" in volumes.get(n, {}) for n, m in mounts.items()), "no emptyDir at /tmp")
    env = {e["name"]: e for e in c.get("env", [])}
    check(env.get("POD_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace",
          "POD_NAMESPACE (budget Leases) is not the pod's namespace")
    if current == "audit-only":
        check("--mode=audit" in args, "audit-only: --mode=audit missing")
    else:
        check(not any(a == "--mode" or a.startswith("--mode=") for a in args), f"{current}: --mode set")

    # --- PDB and Service.
    pdbs = [p for p in find(docs, "PodDisruptionBudget")
            if p["spec"].get("selector", {}).get("matchLabels") == spec.get("selector", {}).get("matchLabels")]
    check(len(pdbs) == 1, "no PodDisruptionBudget selecting the webhook pods")
    if pdbs:
        p = pdbs[0]["spec"]
        ok = (isinstance(p.get("minAvailable"), int) and 1 <= p["minAvailable"] < spec.get("replicas", 1)) or \
             (p.get("maxUnavailable") not in (None, 0, "0%"))
        check(ok, f"PDB {p} does not keep one replica while allowing drains")
    svc = one(docs, "Service", "sizeguard")
    check(any(p.get("port") == 443 and p.get("targetPort") in ("https", 8443) for p in svc.get("spec", {}).get("ports", [])),
          "Service does not map 443 to the webhook port")
    check(svc.get("spec", {}).get("selector") == spec.get("selector", {}).get("matchLabels"), "Service selector != pod labels")

    # --- RBAC: exact, no wildcards, no Secrets.
    for kind in ("ClusterRole", "Role"):
        for r in find(docs, kind):
            for rule in r.get("rules", []):
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    check("*" not in rule.get(field, []), f"{kind} {r['metadata']['name']}: wildcard in {field}")
                check("secrets" not in rule.get("resources", []), f"{kind} {r['metadata']['name']}: access to secrets")
                check(not {"escalate", "bind", "impersonate"} & set(rule.get("verbs", [])), f"{kind} {r['metadata']['name']}: privileged verb")
    def grants(role):
        out = set()
        for rule in role.get("rules", []):
            for g in rule.get("apiGroups", []):
                for res in rule.get("resources", []):
                    for v in rule.get("verbs", []):
                        for n in rule.get("resourceNames", ["*any*"]):
                            out.add((g, res, v, n))
        return out
    A = "*any*"
    read = one(docs, "ClusterRole", "sizeguard-read")
    # Watched (list+watch, get when the watch has not seen an object yet); replicationcontrollers by GET only.
    want_read = {("", "namespaces", v, A) for v in ("get", "list", "watch")} | \
                {("", "pods", v, A) for v in ("list", "watch")} | {("", "replicationcontrollers", "get", A)} | \
                {("apps", r, v, A) for r in ("deployments", "statefulsets", "replicasets") for v in ("get", "list", "watch")}
    check(grants(read) == want_read, f"ClusterRole sizeguard-read grants {sorted(grants(read) ^ want_read)} differently")
    budgets = one(docs, "Role", "sizeguard-budgets")
    want_budgets = {("coordination.k8s.io", "leases", v, A) for v in ("get", "create", "update")}
    check(grants(budgets) == want_budgets, f"Role sizeguard-budgets: {sorted(grants(budgets))}")
    rec_role = one(docs, "Role", "sizeguard-recommender")
    want_rec = {("", "configmaps", v, "sizeguard-recommendations") for v in ("get", "update")}
    check(grants(rec_role) == want_rec, f"Role sizeguard-recommender: {sorted(grants(rec_role))}")
    def bound(kind, name, role_kind, role_name, sa):
        b = one(docs, kind, name)
        check(b.get("roleRef", {}).get("kind") == role_kind and b.get("roleRef", {}).get("name") == role_name,
              f"{kind} {name}: roleRef {b.get('roleRef')}")
        check(b.get("subjects") == [{"kind": "ServiceAccount", "name": sa, "namespace": NS}], f"{kind} {name}: subjects {b.get('subjects')}")
    bound("ClusterRoleBinding", "sizeguard-read", "ClusterRole", "sizeguard-read", "sizeguard")
    # The background audit: LIST of the audited kinds, its own PolicyReports (webhook/app/background_audit.cpp).
    audit = one(docs, "ClusterRole", "sizeguard-audit")
    want_audit = {("", "pods", "list", A)} | {("apps", r, "list", A) for r in ("deployments", "statefulsets", "daemonsets", "replicasets")} | \
                 {("batch", r, "list", A) for r in ("jobs", "cronjobs")} | {("autoscaling", "horizontalpodautoscalers", "list", A)} | \
                 {("wgpolicyk8s.io", r, v, A) for r in ("policyreports", "clusterpolicyreports") for v in ("get", "list", "create", "update", "delete")}
    check(grants(audit) == want_audit, f"ClusterRole sizeguard-audit grants {sorted(grants(audit) ^ want_audit)} differently")
    bound("ClusterRoleBinding", "sizeguard-audit", "ClusterRole", "sizeguard-audit", "sizeguard")
    bound("RoleBinding", "sizeguard-budgets", "Role", "sizeguard-budgets", "sizeguard")
    bound("RoleBinding", "sizeguard-recommender", "Role", "sizeguard-recommender", "sizeguard-recommender")
    check(len(find(docs, "ClusterRole")) == 2 and len(find(docs, "ClusterRoleBinding")) == 2, "unexpected cluster-wide RBAC")

    # --- ConfigMaps.
    recs = one(docs, "ConfigMap", "sizeguard-recommendations")
    literal = recs.get("data", {}).get("recommendations.json", "")
    try:
        snap = json.loads(literal)
        check(isinstance(snap.get("modelVersion"), str) and isinstance(snap.get("generatedAt"), str)
              and isinstance(snap.get("recommendations"), dict), f"recommendations literal lacks required fields: {literal}")
    except ValueError:
        check(False, f"recommendations literal is not JSON: {literal!r}")
    check(recs.get("metadata", {}).get("labels", {}).get("sizeguard.io/bootstrap-only") == "true",
          "recommendations ConfigMap lacks sizeguard.io/bootstrap-only (upgrades would reset it)")
    if current == "base":
        with open(os.path.join(work, "recommendations.json"), "w") as f:
            f.write(literal)
    pol = one(docs, "ConfigMap", "sizeguard-policies")
    files = pol.get("data", {})
    check({"production-floor.yaml", "rightsizing.yaml"} <= set(files), f"policies ConfigMap holds {sorted(files)}")
    for fname, text in files.items():
        # No policy sets a mode: --mode decides (audit-only relies on it).
        check(not re.search(r"^\s*mode\s*:", text, re.M), f"policy {fname} sets a mode; --mode=audit would not apply to it")
        if current == "base":
            os.makedirs(os.path.join(work, "policies"), exist_ok=True)
            with open(os.path.join(work, "policies", fname), "w") as f:
                f.write(text)

    # --- Recommender CronJob.
    cj = one(docs, "CronJob", "sizeguard-recommender")
    cjs = cj.get("spec", {})
    fields = cjs.get("schedule", "").split()
    check(len(fields) == 5 and fields[2:] == ["*", "*", "*"] and fields[0].isdigit() and fields[1].isdigit(),
          f"CronJob schedule {cjs.get('schedule')!r} is not daily")
    check(cjs.get("concurrencyPolicy") == "Forbid", "CronJob concurrencyPolicy is not Forbid")
    jp = cjs.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    check(jp.get("serviceAccountName") == "sizeguard-recommender", "CronJob does not run as sizeguard-recommender")
    jc = (jp.get("containers") or [{}])[0]
    check(jc.get("image") == c.get("image"), "CronJob image differs from the Deployment's")
    ja = jc.get("args", [])
    def flag_value(name):
        for i, a in enumerate(ja):
            if a == name and i + 1 < len(ja): return ja[i + 1]
            if a.startswith(name + "="): return a.split("=", 1)[1]
        return None
    check(ja[:1] == ["recommend"], f"CronJob args {ja[:1]}, want recommend")
    check(flag_value("--publish-configmap") == f"{NS}/sizeguard-recommendations", "CronJob --publish-configmap")
    check(flag_value("--prometheus") == "$(PROMETHEUS_URL)", "CronJob --prometheus $(PROMETHEUS_URL)")
    check(any(e.get("name") == "PROMETHEUS_URL" for e in jc.get("env", [])), "CronJob env lacks PROMETHEUS_URL")
    check(flag_value("--model") == model, "CronJob --model differs from the Deployment's")
    jpsc, jcsc = jp.get("securityContext", {}), jc.get("securityContext", {})
    jeff = lambda k: jcsc.get(k, jpsc.get(k))
    check(jeff("runAsNonRoot") is True and jeff("runAsUser") == 65532 and jcsc.get("readOnlyRootFilesystem") is True
          and jcsc.get("allowPrivilegeEscalation") is False and jcsc.get("capabilities", {}).get("drop") == ["ALL"]
          and (jeff("seccompProfile") or {}).get("type") == "RuntimeDefault", "CronJob container is not hardened")
    check(jc.get("resources", {}).get("limits", {}).get("memory"), "CronJob has no memory limit")
    # It trains on the cluster's own history and keeps the last good model on a volume (#16).
    store = flag_value("--model-store")
    mounts = {m.get("mountPath"): m.get("name") for m in jc.get("volumeMounts", [])}
    claims = {v.get("name"): (v.get("persistentVolumeClaim") or {}).get("claimName") for v in jp.get("volumes", [])}
    check(store is not None and claims.get(mounts.get(store)) == "sizeguard-recommender-models",
          f"CronJob --model-store {store!r} is not on the PVC sizeguard-recommender-models")
    one(docs, "PersistentVolumeClaim", "sizeguard-recommender-models")

    # --- cert-manager overlay.
    ann_key = "cert-manager.io/inject-ca-from"
    if current == "cert-manager":
        for cfg in (mwc, vwc):
            check(cfg.get("metadata", {}).get("annotations", {}).get(ann_key) == f"{NS}/sizeguard-serving",
                  f"{cfg.get('kind')}: {ann_key} missing or wrong")
        serving = one(docs, "Certificate", "sizeguard-serving")
        ss = serving.get("spec", {})
        check(ss.get("secretName") == "sizeguard-tls", "serving Certificate does not write Secret sizeguard-tls")
        check({f"sizeguard.{NS}.svc", f"sizeguard.{NS}.svc.cluster.local"} <= set(ss.get("dnsNames", [])),
              f"serving Certificate dnsNames {ss.get('dnsNames')}")
        check("server auth" in ss.get("usages", ["server auth"]), "serving Certificate lacks server auth usage")
        issuer = one(docs, "Issuer", ss.get("issuerRef", {}).get("name"))
        ca_secret = issuer.get("spec", {}).get("ca", {}).get("secretName")
        check(ca_secret, "serving Certificate is not issued by a CA Issuer")
        cas = [x for x in find(docs, "Certificate") if x["spec"].get("secretName") == ca_secret]
        check(len(cas) == 1 and cas[0]["spec"].get("isCA") is True, "no CA Certificate behind the CA Issuer")
        if cas:
            root = one(docs, "Issuer", cas[0]["spec"].get("issuerRef", {}).get("name"))
            check("selfSigned" in root.get("spec", {}), "the CA Certificate is not issued by a selfSigned Issuer")
    else:
        check(not find(docs, "Certificate") and not find(docs, "Issuer"), "cert-manager objects outside the cert-manager overlay")
        for cfg in (mwc, vwc):
            check(ann_key not in cfg.get("metadata", {}).get("annotations", {}), f"{cfg.get('kind')}: {ann_key} outside the overlay")

    # --- Overlays change only what they say they change.
    if current != "base":
        base_docs = {(d["kind"], d["metadata"]["name"]): d for d in json.load(open(os.path.join(work, "base.json")))}
        mine = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        added = set(mine) - set(base_docs)
        if current == "cert-manager":
            check(added == {("Issuer", "sizeguard-selfsigned"), ("Issuer", "sizeguard-ca"),
                            ("Certificate", "sizeguard-ca"), ("Certificate", "sizeguard-serving")}, f"added {sorted(added)}")
        else:
            check(not added, f"{current} adds {sorted(added)}")
        check(not set(base_docs) - set(mine), f"{current} drops {sorted(set(base_docs) - set(mine))}")
        expected_changes = {"audit-only": {("Deployment", "sizeguard"), ("ValidatingWebhookConfiguration", "sizeguard")},
                            "validate-ignore": {("ValidatingWebhookConfiguration", "sizeguard")},
                            "cert-manager": {("MutatingWebhookConfiguration", "sizeguard"), ("ValidatingWebhookConfiguration", "sizeguard")}}
        changed = {k for k in set(mine) & set(base_docs) if mine[k] != base_docs[k]}
        check(changed == expected_changes[current], f"{current} changes {sorted(changed)}")

if errors:
    print("\n".join("FAIL: " + e for e in errors), file=sys.stderr)
    sys.exit(1)
print(f"manifests: {len(variants)} renderings checked")
PY

# The optional PolicyReport CRDs component renders on top of the base: the two wgpolicyk8s.io
# v1alpha2 CRDs, namespaced and cluster-scoped, with the fields the audit writes typed.
mkdir -p "$work/with-crds/overlay"
cp -r "$src/deploy/base" "$src/deploy/components" "$work/with-crds/"
printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../base]\ncomponents: [../components/policyreport-crds]\n' \
  > "$work/with-crds/overlay/kustomization.yaml"
render with-crds "$work/with-crds/overlay"
python3 - "$work/with-crds.json" <<'PY'
import json, sys
docs = json.load(open(sys.argv[1]))
crds = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
assert set(crds) == {"policyreports.wgpolicyk8s.io", "clusterpolicyreports.wgpolicyk8s.io"}, sorted(crds)
for name, scope in (("policyreports.wgpolicyk8s.io", "Namespaced"), ("clusterpolicyreports.wgpolicyk8s.io", "Cluster")):
    spec = crds[name]["spec"]
    assert spec["group"] == "wgpolicyk8s.io" and spec["scope"] == scope, name
    (v,) = spec["versions"]
    assert v["name"] == "v1alpha2" and v["served"] and v["storage"], name
    props = v["schema"]["openAPIV3Schema"]["properties"]
    assert {"summary", "results"} <= set(props), name
    assert props["results"]["items"]["properties"]["result"]["enum"] == ["pass", "fail", "warn", "error", "skip"], name
print("manifests: the policyreport-crds component renders both CRDs")
PY

# The real binary accepts the recommendations literal and the base policies (as the pod would).
bin=${SIZEGUARD_BINARY:-}
if [[ -n $bin && -x $bin ]]; then
  printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n' > "$work/ns.yaml"
  "$bin" review -f "$work/ns.yaml" --policies '' --recommendations "$work/recommendations.json" > "$work/review.out" 2>&1 \
    || { cat "$work/review.out" >&2; fail "sizeguard does not load the recommendations ConfigMap literal"; }
  "$bin" policy lint "$work/policies" > "$work/lint.out" 2>&1 || { cat "$work/lint.out" >&2; fail "base policies do not lint"; }
  echo "manifests: the binary loads the recommendations literal and lints $(ls "$work/policies" | wc -l) base policies"
else
  echo "manifests: SIZEGUARD_BINARY not set, skipped the binary checks"
fi
echo "deploy_manifests: all checks passed ($reader)"
