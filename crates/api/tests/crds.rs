//! The generated CRDs are what the API server enforces at apply time, so they are tested as the
//! API server would treat them: structural, with CEL rules that compile within the cost budget,
//! accepting the documented examples and rejecting each invalid shape with a clear message.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use kube_cel::{Validator, compile_schema};
use omniscale_api::crds;
use serde_json::{Value, json};

fn schema_of(kind: &str) -> Value {
    let crd = crds().into_iter().find(|c| c.spec.names.kind == kind).map(serde_json::to_value);
    let crd = match crd {
        Some(Ok(v)) => v,
        other => panic!("no CRD for {kind}: {other:?}"),
    };
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Structural-schema rules of apiextensions.k8s.io/v1 (the ones a derive can get wrong).
fn structural_violations(s: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = s.as_object() else { return };
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !obj.contains_key("type") && !int_or_string && !preserve {
        out.push(format!("{path}: no type"));
    }
    for forbidden in ["$ref", "definitions", "$defs", "oneOf", "allOf", "not"] {
        if obj.contains_key(forbidden) {
            out.push(format!("{path}: {forbidden} is not allowed in a structural schema"));
        }
    }
    if let Some(any_of) = obj.get("anyOf").and_then(Value::as_array) {
        // Only the int-or-string idiom may name types inside anyOf.
        for branch in any_of {
            let t = branch.get("type").and_then(Value::as_str);
            if !(int_or_string && matches!(t, Some("integer") | Some("string"))) && branch.get("type").is_some() {
                out.push(format!("{path}: anyOf branch declares a type"));
            }
            if branch.get("properties").is_some() || branch.get("description").is_some() {
                out.push(format!("{path}: anyOf branch declares structure"));
            }
        }
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!("{path}: both properties and additionalProperties"));
    }
    if obj.get("type") == Some(&json!("array")) && !obj.contains_key("items") {
        out.push(format!("{path}: array without items"));
    }
    if let Some(keys) = obj.get("x-kubernetes-list-map-keys").and_then(Value::as_array) {
        let required = s["items"]["required"].as_array().cloned().unwrap_or_default();
        for k in keys {
            if !required.contains(k) {
                out.push(format!("{path}: list-map key {k} must be required"));
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            structural_violations(sub, &format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = obj.get("items") {
        structural_violations(items, &format!("{path}[]"), out);
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        structural_violations(ap, &format!("{path}{{}}"), out);
    }
}

#[test]
fn schemas_are_structural() {
    for kind in ["Autoscaler", "NodePool"] {
        let mut problems = Vec::new();
        structural_violations(&schema_of(kind), kind, &mut problems);
        assert!(problems.is_empty(), "{kind}: {problems:#?}");
    }
}

#[test]
fn every_spec_field_is_documented_for_kubectl_explain() {
    fn undocumented(s: &Value, path: &str, out: &mut Vec<String>) {
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                let p = format!("{path}.{name}");
                if sub.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
                    out.push(p.clone());
                }
                undocumented(sub, &p, out);
            }
        }
        if let Some(items) = s.get("items") {
            undocumented(items, path, out);
        }
    }
    for kind in ["Autoscaler", "NodePool"] {
        let mut missing = Vec::new();
        undocumented(&schema_of(kind)["properties"]["spec"], "spec", &mut missing);
        assert!(missing.is_empty(), "{kind} fields without description: {missing:#?}");
    }
}

#[test]
fn crds_stay_small_enough_for_client_side_apply() {
    // kubectl apply stores the object in an annotation; annotations are capped at 256 KiB.
    for crd in crds() {
        let size = serde_json::to_vec(&crd).map(|v| v.len()).unwrap_or(usize::MAX);
        assert!(size < 128 * 1024, "{} is {size} bytes", crd.spec.names.kind);
    }
}

#[test]
fn cel_rules_compile_within_cost_budget() {
    fn check(s: &Value, path: &str, out: &mut Vec<String>) {
        if let Some(rules) = s.get("x-kubernetes-validations").and_then(Value::as_array) {
            let compiled = compile_schema(s);
            for e in compiled.compilation_errors() {
                out.push(format!("{path}: {e:?}"));
            }
            for r in rules {
                let rule = r["rule"].as_str().unwrap_or_default();
                for w in kube_cel::estimate_rule_cost(rule, &compiled) {
                    if matches!(w.kind, kube_cel::WarningKind::CostExceeded) {
                        out.push(format!("{path}: {rule}: {}", w.message));
                    }
                }
            }
        }
        for key in ["properties", "additionalProperties"] {
            if let Some(props) = s.get(key).and_then(Value::as_object) {
                for (name, sub) in props {
                    check(sub, &format!("{path}.{name}"), out);
                }
            }
        }
        if let Some(items) = s.get("items") {
            check(items, &format!("{path}[]"), out);
        }
    }
    for kind in ["Autoscaler", "NodePool"] {
        let mut problems = Vec::new();
        check(&schema_of(kind), kind, &mut problems);
        assert!(problems.is_empty(), "{kind}: {problems:#?}");
    }
}

fn validate(kind: &str, obj: Value) -> Result<(), Vec<String>> {
    Validator::new()
        .validate(&schema_of(kind), &obj, None)
        .map_err(|errs| errs.into_vec().into_iter().map(|e| format!("{}: {}", e.field_path, e.message)).collect())
}

fn autoscaler(spec: Value) -> Value {
    json!({"apiVersion": "omniscale.dev/v1alpha1", "kind": "Autoscaler", "metadata": {"name": "a", "namespace": "default"}, "spec": spec})
}

fn nodepool(spec: Value) -> Value {
    json!({"apiVersion": "omniscale.dev/v1alpha1", "kind": "NodePool", "metadata": {"name": "p"}, "spec": spec})
}

const TARGET: &str = r#"{"apiVersion": "apps/v1", "kind": "Deployment", "name": "php-apache"}"#;

fn target() -> Value {
    serde_json::from_str(TARGET).unwrap_or(Value::Null)
}

#[test]
fn accepts_the_walkthrough_autoscalers() {
    let php = autoscaler(json!({
        "targetRef": target(),
        "horizontal": {"minReplicas": 1, "maxReplicas": 10, "metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}
        ]}
    }));
    assert_eq!(validate("Autoscaler", php), Ok(()));
    let hamster = autoscaler(json!({
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hamster"},
        "vertical": {"updatePolicy": {"updateMode": "InPlaceOrRecreate", "minReplicas": 2},
            "resourcePolicy": {"containerPolicies": [{"containerName": "*",
                "minAllowed": {"cpu": "100m", "memory": "50Mi"}, "maxAllowed": {"cpu": 1, "memory": "500Mi"},
                "controlledResources": ["cpu", "memory"]}]}}
    }));
    assert_eq!(validate("Autoscaler", hamster), Ok(()));
}

fn rejected_with(kind: &str, obj: Value, needle: &str) {
    match validate(kind, obj) {
        Ok(()) => panic!("expected rejection mentioning {needle:?}"),
        Err(errors) => assert!(errors.iter().any(|e| e.contains(needle)), "{needle:?} not in {errors:#?}"),
    }
}

#[test]
fn rejects_invalid_autoscalers_with_clear_messages() {
    rejected_with(
        "Autoscaler",
        autoscaler(json!({"targetRef": target(), "horizontal": {"minReplicas": 5, "maxReplicas": 2}})),
        "minReplicas must not exceed maxReplicas",
    );
    rejected_with(
        "Autoscaler",
        autoscaler(json!({"targetRef": target(), "horizontal": {"minReplicas": 0, "maxReplicas": 2}})),
        "minReplicas 0 needs at least one Object or External metric",
    );
    rejected_with(
        "Autoscaler",
        autoscaler(json!({"targetRef": target()})),
        "has(self.horizontal) || has(self.vertical)",
    );
    rejected_with(
        "Autoscaler",
        autoscaler(json!({"targetRef": target(), "horizontal": {"maxReplicas": 3, "metrics": [{"type": "Bogus"}]}})),
        "metric type must be one of",
    );
    rejected_with(
        "Autoscaler",
        autoscaler(json!({"targetRef": target(), "vertical": {"resourcePolicy": {"containerPolicies": [
            {"containerName": "app", "minAllowed": {"cpu": "2"}, "maxAllowed": {"cpu": "1500m"}}
        ]}}})),
        "minAllowed must not exceed maxAllowed",
    );
}

#[test]
fn scale_to_zero_is_allowed_with_an_external_metric() {
    let obj = autoscaler(json!({"targetRef": target(), "horizontal": {"minReplicas": 0, "maxReplicas": 5, "metrics": [
        {"type": "External", "external": {"metric": {"name": "queue"}, "target": {"type": "AverageValue", "averageValue": "30"}}}
    ]}}));
    assert_eq!(validate("Autoscaler", obj), Ok(()));
}

#[test]
fn nodepool_needs_exactly_one_backing() {
    let asg = json!({"name": "spot-ng"});
    let prov = json!({"subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "demo"}}],
                      "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "demo"}}]});
    assert_eq!(validate("NodePool", nodepool(json!({"autoScalingGroup": asg.clone()}))), Ok(()));
    assert_eq!(validate("NodePool", nodepool(json!({"provisioner": prov.clone()}))), Ok(()));
    rejected_with("NodePool", nodepool(json!({})), "exactly one of autoScalingGroup and provisioner");
    rejected_with(
        "NodePool",
        nodepool(json!({"autoScalingGroup": asg, "provisioner": prov})),
        "exactly one of autoScalingGroup and provisioner",
    );
    rejected_with(
        "NodePool",
        nodepool(json!({"autoScalingGroup": {"name": "x", "discovery": {"clusterName": "c"}}})),
        "exactly one of name and discovery",
    );
}

#[test]
fn nodepool_requirements_and_budgets_are_checked() {
    let with = |req: Value| {
        nodepool(json!({"provisioner": {"requirements": [req],
            "subnetSelectorTerms": [{"id": "subnet-1"}], "securityGroupSelectorTerms": [{"id": "sg-1"}]}}))
    };
    assert_eq!(
        validate("NodePool", with(json!({"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}))),
        Ok(())
    );
    rejected_with(
        "NodePool",
        with(json!({"key": "k", "operator": "In", "values": []})),
        "In and NotIn need at least one value",
    );
    rejected_with("NodePool", with(json!({"key": "k", "operator": "Exists", "values": ["a"]})), "take no values");
    rejected_with("NodePool", with(json!({"key": "k", "operator": "Gt", "values": ["1", "2"]})), "exactly one integer");
    rejected_with(
        "NodePool",
        nodepool(
            json!({"autoScalingGroup": {"name": "a"}, "disruption": {"budgets": [{"nodes": "1", "schedule": "0 9 * * *"}]}}),
        ),
        "schedule and duration go together",
    );
    rejected_with(
        "NodePool",
        nodepool(
            json!({"provisioner": {"subnetSelectorTerms": [{"id": "s", "tags": {"a": "b"}}], "securityGroupSelectorTerms": [{"id": "g"}]}}),
        ),
        "set either id or tags",
    );
}

#[test]
fn defaults_match_upstream() {
    let schema = schema_of("Autoscaler");
    let obj = autoscaler(json!({"targetRef": target(), "horizontal": {"maxReplicas": 4}}));
    let defaulted = kube_cel::apply_defaults(&schema, &obj);
    assert_eq!(defaulted["spec"]["mode"], json!("Auto"));
    assert_eq!(defaulted["spec"]["horizontal"]["minReplicas"], json!(1));

    let schema = schema_of("NodePool");
    let obj = nodepool(json!({"autoScalingGroup": {"name": "a"}, "scaleDown": {}, "disruption": {}}));
    let d = kube_cel::apply_defaults(&schema, &obj);
    assert_eq!(d["spec"]["scaleDown"]["utilizationThreshold"], json!(0.5));
    assert_eq!(d["spec"]["scaleDown"]["unneededTime"], json!("10m"));
    assert_eq!(d["spec"]["scaleDown"]["delayAfterAdd"], json!("10m"));
    assert_eq!(d["spec"]["disruption"]["consolidationPolicy"], json!("WhenEmptyOrUnderutilized"));
    assert_eq!(d["spec"]["disruption"]["consolidateAfter"], json!("0s"));
    assert_eq!(d["spec"]["disruption"]["budgets"], json!([{"nodes": "10%"}]));
}

#[test]
fn enums_and_bounds_are_in_the_schema() {
    let s = schema_of("Autoscaler");
    let spec = &s["properties"]["spec"]["properties"];
    assert_eq!(spec["mode"]["enum"], json!(["Auto", "Recommend", "Off"]));
    assert_eq!(spec["horizontal"]["properties"]["maxReplicas"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(spec["horizontal"]["required"], json!(["maxReplicas"]));
    let cp =
        &spec["vertical"]["properties"]["resourcePolicy"]["properties"]["containerPolicies"]["items"]["properties"];
    assert_eq!(cp["controlledValues"]["enum"], json!(["RequestsAndLimits", "RequestsOnly"]));
    let quantity = &cp["minAllowed"]["additionalProperties"];
    let pattern = quantity["anyOf"][1]["pattern"].as_str().unwrap_or_default();
    let re = match regex::Regex::new(pattern) {
        Ok(re) => re,
        Err(e) => panic!("quantity pattern does not compile: {e}"),
    };
    for ok in ["100m", "1", "1.5Gi", "262144k", "1e3", "+2"] {
        assert!(re.is_match(ok), "{ok}");
        assert!(omniscale_api::quantity::Quantity::parse(ok).is_ok(), "{ok}");
    }
    for bad in ["-1", "1x", "", "Mi"] {
        assert!(!re.is_match(bad), "{bad}");
    }
    assert_eq!(quantity["anyOf"][0]["minimum"].as_f64(), Some(0.0));
}

/// Every Autoscaler and NodePool under `examples/` passes the CRD's validation and decodes into
/// the Rust types, so the walkthroughs stay applicable as the API evolves.
#[test]
fn examples_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut checked = 0;
    let dirs = std::fs::read_dir(&root).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
    for dir in dirs {
        let files = std::fs::read_dir(dir.path()).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
        for file in files.iter().filter(|f| f.path().extension().is_some_and(|e| e == "yaml")) {
            let text = std::fs::read_to_string(file.path()).unwrap_or_default();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value: Value = match serde::Deserialize::deserialize(doc) {
                    Ok(v) => v,
                    Err(e) => panic!("{}: {e}", file.path().display()),
                };
                let kind = value["kind"].as_str().unwrap_or_default().to_string();
                let decoded = match kind.as_str() {
                    "Autoscaler" => serde_json::from_value::<omniscale_api::Autoscaler>(value.clone()).map(|_| ()),
                    "NodePool" => serde_json::from_value::<omniscale_api::NodePool>(value.clone()).map(|_| ()),
                    _ => continue,
                };
                assert!(decoded.is_ok(), "{}: {decoded:?}", file.path().display());
                assert_eq!(validate(&kind, value), Ok(()), "{}", file.path().display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "only {checked} example resources found under {}", root.display());
}

#[test]
fn rendered_yaml_survives_yaml_1_1_readers() {
    // kubectl reads YAML 1.1, where a bare `Off` is the boolean false.
    let yaml = omniscale_api::render_crds_yaml().unwrap();
    let bool_words =
        regex::Regex::new(r"(?m)(:|^\s*-)\s+(y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)\s*$").unwrap();
    assert!(!bool_words.is_match(&yaml), "unquoted YAML 1.1 boolean: {:?}", bool_words.find(&yaml));
    assert!(yaml.contains("- 'Off'"));
    let docs: Vec<Value> = yaml.split("\n---\n").skip(1).map(|d| serde_yaml::from_str(d).unwrap()).collect();
    let expected: Vec<Value> = omniscale_api::crds().iter().map(|c| serde_json::to_value(c).unwrap()).collect();
    assert_eq!(docs, expected, "quoting changes nothing for YAML 1.2 readers");
}
