//! Defaulting of built-in kinds, as kube-apiserver's registered defaulters do it. Clients depend
//! on these: `kubectl apply` diffs against defaulted objects, `kubectl describe` prints them, and
//! pods whose containers only set limits get equal requests (which QoS and the VPA rely on).

use serde_json::{Value, json};

fn set_default(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        if m.get(key).is_none_or(Value::is_null) {
            m.insert(key.to_owned(), v);
        }
    }
}

fn ensure_object<'a>(obj: &'a mut Value, key: &str) -> &'a mut Value {
    if !obj[key].is_object() {
        obj[key] = json!({});
    }
    &mut obj[key]
}

pub fn apply(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Pod") => pod_spec(ensure_object(obj, "spec"), true),
        ("apps", "Deployment") => {
            let spec = ensure_object(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = ensure_object(spec, "strategy");
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let ru = ensure_object(strategy, "rollingUpdate");
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
            template(spec);
        }
        ("apps", "ReplicaSet") => {
            let spec = ensure_object(obj, "spec");
            set_default(spec, "replicas", json!(1));
            template(spec);
        }
        ("apps", "StatefulSet") => {
            let spec = ensure_object(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(spec, "revisionHistoryLimit", json!(10));
            let us = ensure_object(spec, "updateStrategy");
            set_default(us, "type", json!("RollingUpdate"));
            if us["type"] == "RollingUpdate" {
                set_default(ensure_object(us, "rollingUpdate"), "partition", json!(0));
            }
            template(spec);
        }
        ("apps", "DaemonSet") => {
            let spec = ensure_object(obj, "spec");
            set_default(spec, "revisionHistoryLimit", json!(10));
            let us = ensure_object(spec, "updateStrategy");
            set_default(us, "type", json!("RollingUpdate"));
            if us["type"] == "RollingUpdate" {
                let ru = ensure_object(us, "rollingUpdate");
                set_default(ru, "maxUnavailable", json!(1));
                set_default(ru, "maxSurge", json!(0));
            }
            template(spec);
        }
        ("", "Service") => {
            let spec = ensure_object(obj, "spec");
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                    let port = p["port"].clone();
                    set_default(p, "targetPort", port);
                }
            }
        }
        ("", "Namespace") => {
            // The NamespaceDefaultLabelName behaviour: webhooks' namespaceSelectors rely on it.
            if let Some(name) = obj["metadata"]["name"].as_str().filter(|n| !n.is_empty()).map(str::to_owned) {
                let meta = ensure_object(obj, "metadata");
                ensure_object(meta, "labels")["kubernetes.io/metadata.name"] = json!(name);
            }
        }
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            for w in obj.get_mut("webhooks").and_then(Value::as_array_mut).into_iter().flatten() {
                set_default(w, "failurePolicy", json!("Fail"));
                set_default(w, "matchPolicy", json!("Equivalent"));
                set_default(w, "namespaceSelector", json!({}));
                set_default(w, "objectSelector", json!({}));
                set_default(w, "timeoutSeconds", json!(10));
                set_default(w, "reinvocationPolicy", json!("Never"));
                if let Some(svc) = w.get_mut("clientConfig").and_then(|c| c.get_mut("service")) {
                    set_default(svc, "port", json!(443));
                }
                for r in w.get_mut("rules").and_then(Value::as_array_mut).into_iter().flatten() {
                    set_default(r, "scope", json!("*"));
                }
            }
        }
        _ => {}
    }
}

fn template(spec: &mut Value) {
    let t = ensure_object(spec, "template");
    pod_spec(ensure_object(t, "spec"), false);
}

fn pod_spec(spec: &mut Value, is_pod: bool) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    if is_pod {
        set_default(spec, "enableServiceLinks", json!(true));
        set_default(spec, "priority", json!(0));
        set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
        // The DefaultTolerationSeconds admission plugin.
        let tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
        let mut t = tolerations.clone();
        for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
            if !tolerations.iter().any(|x| x["key"] == key) {
                t.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
        spec["tolerations"] = Value::Array(t);
    }
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                container(c);
            }
        }
    }
}

fn container(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or(image);
    let latest = !last.contains(':') && !image.contains('@') || last.ends_with(":latest");
    set_default(c, "imagePullPolicy", json!(if latest { "Always" } else { "IfNotPresent" }));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    // Requests default to limits for any resource with a limit but no request.
    let limits = c["resources"]["limits"].as_object().cloned().unwrap_or_default();
    if !limits.is_empty() {
        let resources = ensure_object(c, "resources");
        let requests = ensure_object(resources, "requests");
        for (k, v) in limits {
            set_default(requests, &k, v);
        }
    }
    if c["resources"].is_null() {
        c["resources"] = json!({});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_and_pod_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.2",
            "resources": {"limits": {"cpu": "500m"}}}]}}}});
        apply("apps", "Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["resources"]["requests"]["cpu"], "500m");
        let mut p = json!({"spec": {"containers": [{"name": "c", "image": "nginx"}], "tolerations": [{"key": "x", "operator": "Exists"}]}});
        apply("", "Pod", &mut p);
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 3);
        let mut again = p.clone();
        apply("", "Pod", &mut again);
        assert_eq!(again, p, "defaulting is idempotent");
        assert!(p["spec"]["containers"][0].get("ports").is_none(), "absent lists stay absent");
        assert!(p["spec"].get("initContainers").is_none(), "absent lists stay absent");
    }
}
