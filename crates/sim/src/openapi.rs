//! OpenAPI v3 documents per group-version, enough for `kubectl explain` (schemas tagged with
//! `x-kubernetes-group-version-kind`) and for kubectl to see that the server validates fields
//! itself (the `fieldValidation` query parameter on PATCH), so it sends `fieldValidation=Strict`
//! rather than validating client-side.

use crate::registry::{Registry, ResourceType};
use k8s_openapi::api::{
    admissionregistration::v1 as adm, apps::v1 as apps, coordination::v1 as coord, core::v1 as core, events::v1 as ev,
    policy::v1 as policy, rbac::v1 as rbac,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use schemars::JsonSchema;
use serde_json::{Map, Value, json};

fn schema_of<T: JsonSchema>() -> (Value, Map<String, Value>) {
    let settings = schemars::generate::SchemaSettings::openapi3();
    let generator = settings.into_generator();
    let root = generator.into_root_schema_for::<T>();
    let mut v = serde_json::to_value(root).unwrap_or(Value::Null);
    let defs = v
        .as_object_mut()
        .and_then(|m| m.remove("components"))
        .and_then(|c| c.get("schemas").and_then(Value::as_object).cloned())
        .or_else(|| v.as_object_mut().and_then(|m| m.remove("$defs")).and_then(|d| d.as_object().cloned()))
        .unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.remove("$schema");
        m.remove("definitions");
    }
    (v, defs)
}

fn builtin_schema(group: &str, kind: &str) -> Option<(Value, Map<String, Value>)> {
    Some(match (group, kind) {
        ("", "Namespace") => schema_of::<core::Namespace>(),
        ("", "Pod") => schema_of::<core::Pod>(),
        ("", "Node") => schema_of::<core::Node>(),
        ("", "Event") => schema_of::<core::Event>(),
        ("", "Service") => schema_of::<core::Service>(),
        ("", "ConfigMap") => schema_of::<core::ConfigMap>(),
        ("", "Secret") => schema_of::<core::Secret>(),
        ("", "LimitRange") => schema_of::<core::LimitRange>(),
        ("", "ServiceAccount") => schema_of::<core::ServiceAccount>(),
        ("apps", "Deployment") => schema_of::<apps::Deployment>(),
        ("apps", "ReplicaSet") => schema_of::<apps::ReplicaSet>(),
        ("apps", "StatefulSet") => schema_of::<apps::StatefulSet>(),
        ("apps", "DaemonSet") => schema_of::<apps::DaemonSet>(),
        ("policy", "PodDisruptionBudget") => schema_of::<policy::PodDisruptionBudget>(),
        ("coordination.k8s.io", "Lease") => schema_of::<coord::Lease>(),
        ("events.k8s.io", "Event") => schema_of::<ev::Event>(),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => schema_of::<apiext::CustomResourceDefinition>(),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            schema_of::<adm::MutatingWebhookConfiguration>()
        }
        ("rbac.authorization.k8s.io", "ClusterRole") => schema_of::<rbac::ClusterRole>(),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => schema_of::<rbac::ClusterRoleBinding>(),
        ("rbac.authorization.k8s.io", "Role") => schema_of::<rbac::Role>(),
        ("rbac.authorization.k8s.io", "RoleBinding") => schema_of::<rbac::RoleBinding>(),
        _ => return None,
    })
}

fn schema_name(t: &ResourceType) -> String {
    let g = if t.group.is_empty() { "core".to_owned() } else { t.group.clone() };
    format!("{g}.{}.{}", t.version, t.kind)
}

fn gvk(t: &ResourceType) -> Value {
    json!([{"group": t.group, "version": t.version, "kind": t.kind}])
}

/// The `/openapi/v3` index: one entry per served group-version.
pub fn index(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, versions) in registry.groups() {
        for v in versions {
            let p = if group.is_empty() { format!("api/{v}") } else { format!("apis/{group}/{v}") };
            let hash =
                format!("{:016X}", fxhash(&format!("{p}{}", registry.all().filter(|t| t.group == group).count())));
            paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}));
        }
    }
    json!({"paths": paths})
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// The document for one group-version.
pub fn document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let types: Vec<&ResourceType> = registry.all().filter(|t| t.group == group && t.version == version).collect();
    if types.is_empty() {
        return None;
    }
    let mut schemas = Map::new();
    let mut paths = Map::new();
    let field_validation = json!({"name": "fieldValidation", "in": "query", "description": "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.", "schema": {"type": "string", "uniqueItems": true}});
    for t in &types {
        if t.read_only {
            continue;
        }
        let name = schema_name(t);
        let mut top = match &t.schema {
            Some(s) => s.clone(),
            None => match builtin_schema(&t.group, &t.kind) {
                Some((root, defs)) => {
                    for (k, v) in defs {
                        schemas.entry(k).or_insert(v);
                    }
                    root
                }
                None => json!({"type": "object"}),
            },
        };
        top["x-kubernetes-group-version-kind"] = gvk(t);
        schemas.insert(name.clone(), top);
        let base = if t.group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
        let item = if t.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{base}/{}/{{name}}", t.plural)
        };
        let body =
            json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}});
        let op = |action: &str| {
            json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk(t)[0].clone(),
                   "parameters": [field_validation.clone()], "requestBody": body.clone(),
                   "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}}}})
        };
        paths.insert(
            item.clone(),
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
        let coll = item.trim_end_matches("/{name}").to_owned();
        paths.insert(coll, json!({"post": op("post")}));
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes (omniscale sim)", "version": "v1.33.0"}, "paths": paths, "components": {"schemas": schemas}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_carry_kinds_and_field_validation() {
        let r = Registry::default();
        let doc = document(&r, "apps", "v1").unwrap();
        let d = &doc["components"]["schemas"]["apps.v1.Deployment"];
        assert_eq!(d["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        assert!(d["properties"]["spec"].is_object());
        let path = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(path["parameters"][0]["name"], "fieldValidation");
        let refs = doc.to_string();
        assert!(!refs.contains("#/$defs/"), "references resolve inside components");
        assert!(
            index(&r)["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
    }
}
