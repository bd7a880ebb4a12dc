//! Custom resource handling the way kube-apiserver does it for structural schemas: prune unknown
//! fields, apply defaults, then validate (OpenAPI keywords first, CEL rules through kube-cel, the
//! same CEL library family the API server's rules are written for).

use regex::Regex;
use serde_json::Value;

/// Removes fields the schema does not declare, unless `x-kubernetes-preserve-unknown-fields`.
/// `apiVersion`, `kind` and `metadata` at the root are always kept.
pub fn prune(obj: &mut Value, schema: &Value) {
    prune_at(obj, schema, true);
}

fn prune_at(v: &mut Value, schema: &Value, root: bool) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        && schema.get("properties").is_none()
    {
        return;
    }
    match v {
        Value::Object(m) => {
            let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                m.retain(|k, _| {
                    props.contains_key(k)
                        || preserve
                        || (root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
                });
                for (k, child) in m.iter_mut() {
                    if let Some(s) = props.get(k) {
                        prune_at(child, s, false);
                    }
                }
            } else if let Some(add) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in m.values_mut() {
                    prune_at(child, add, false);
                }
            } else if !preserve && schema.get("x-kubernetes-int-or-string").is_none() && !root {
                m.clear();
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for i in items {
                    prune_at(i, item_schema, false);
                }
            }
        }
        _ => {}
    }
}

/// Applies schema defaults (delegated to kube-cel, which follows upstream's defaulting rules).
pub fn default(obj: &Value, schema: &Value) -> Value {
    kube_cel::apply_defaults(schema, obj)
}

/// Validates against OpenAPI keywords and CEL rules; returns `(field, message)` pairs.
pub fn validate(obj: &Value, old: Option<&Value>, schema: &Value) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    // The root's metadata is validated by the API machinery, not the CRD schema.
    if let (Some(m), Some(props)) = (obj.as_object(), schema.get("properties").and_then(Value::as_object)) {
        for (k, s) in props {
            if k == "metadata" || k == "apiVersion" || k == "kind" {
                continue;
            }
            if let Some(child) = m.get(k) {
                check(child, s, k, &mut errs);
            }
        }
        for r in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !m.contains_key(r) {
                errs.push((r.to_owned(), "Required value".to_owned()));
            }
        }
    }
    if errs.is_empty() {
        if let Err(cel) = kube_cel::Validator::new().validate(schema, obj, old) {
            for e in cel.into_vec() {
                errs.push((e.field_path.clone(), e.message.clone()));
            }
        }
    }
    errs
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(v: &Value, s: &Value, path: &str, errs: &mut Vec<(String, String)>) {
    if v.is_null() {
        if s.get("nullable") != Some(&Value::Bool(true)) {
            // Upstream prunes nulls for non-nullable fields with defaults; elsewhere it's an error.
            if s.get("default").is_none() {
                errs.push((
                    path.to_owned(),
                    format!(
                        "Invalid value: \"null\": {path} in body must be of type {}",
                        s["type"].as_str().unwrap_or("object")
                    ),
                ));
            }
        }
        return;
    }
    let int_or_string = s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        let actual = type_name(v);
        let ok = actual == t
            || (t == "number" && actual == "integer")
            || (int_or_string && matches!(actual, "integer" | "string"));
        if !ok {
            errs.push((
                path.to_owned(),
                format!("Invalid value: \"{actual}\": {path} in body must be of type {t}: \"{actual}\""),
            ));
            return;
        }
    } else if int_or_string && !matches!(type_name(v), "integer" | "string") {
        errs.push((path.to_owned(), format!("Invalid value: {v}: {path} in body must be of type integer or string")));
        return;
    }
    if let Some(options) = s.get("enum").and_then(Value::as_array) {
        if !options.contains(v) {
            let list: Vec<String> = options.iter().map(|o| o.to_string()).collect();
            errs.push((path.to_owned(), format!("Unsupported value: {v}: supported values: {}", list.join(", "))));
        }
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            let excl = s.get("exclusiveMinimum") == Some(&Value::Bool(true));
            if n < min || (excl && n == min) {
                errs.push((
                    path.to_owned(),
                    format!("Invalid value: {v}: {path} in body should be greater than or equal to {min}"),
                ));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            let excl = s.get("exclusiveMaximum") == Some(&Value::Bool(true));
            if n > max || (excl && n == max) {
                errs.push((
                    path.to_owned(),
                    format!("Invalid value: {v}: {path} in body should be less than or equal to {max}"),
                ));
            }
        }
    }
    if let Some(st) = v.as_str() {
        let len = st.chars().count() as u64;
        if s.get("maxLength").and_then(Value::as_u64).is_some_and(|m| len > m) {
            errs.push((path.to_owned(), format!("Too long: may not be more than {} bytes", s["maxLength"])));
        }
        if s.get("minLength").and_then(Value::as_u64).is_some_and(|m| len < m) {
            errs.push((
                path.to_owned(),
                format!("Invalid value: \"{st}\": {path} in body should be at least {} chars long", s["minLength"]),
            ));
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str) {
            if let Ok(re) = Regex::new(p) {
                if !re.is_match(st) {
                    errs.push((path.to_owned(), format!("Invalid value: \"{st}\": {path} in body should match '{p}'")));
                }
            }
        }
    }
    match v {
        Value::Object(m) => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, child) in m {
                    if let Some(cs) = props.get(k) {
                        check(child, cs, &format!("{path}.{k}"), errs);
                    }
                }
            } else if let Some(add) = s.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, child) in m {
                    check(child, add, &format!("{path}.{k}"), errs);
                }
            }
            for r in s["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !m.contains_key(r) {
                    errs.push((format!("{path}.{r}"), "Required value".to_owned()));
                }
            }
            if s.get("maxProperties").and_then(Value::as_u64).is_some_and(|x| m.len() as u64 > x) {
                errs.push((
                    path.to_owned(),
                    format!("Too many: {}: must have at most {} items", m.len(), s["maxProperties"]),
                ));
            }
        }
        Value::Array(items) => {
            if s.get("maxItems").and_then(Value::as_u64).is_some_and(|x| items.len() as u64 > x) {
                errs.push((
                    path.to_owned(),
                    format!("Too many: {}: must have at most {} items", items.len(), s["maxItems"]),
                ));
            }
            if s.get("minItems").and_then(Value::as_u64).is_some_and(|x| (items.len() as u64) < x) {
                errs.push((
                    path.to_owned(),
                    format!(
                        "Invalid value: {}: {path} in body should have at least {} items",
                        items.len(),
                        s["minItems"]
                    ),
                ));
            }
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item, is, &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["n"], "properties": {
                "n": {"type": "integer", "minimum": 1, "maximum": 5},
                "mode": {"type": "string", "enum": ["A", "B"], "default": "A"},
                "name": {"type": "string", "pattern": "^[a-z]+$"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "q": {"x-kubernetes-int-or-string": true}},
              "x-kubernetes-validations": [{"rule": "self.n != 3", "message": "n must not be 3"}]}}})
    }

    #[test]
    fn prunes_defaults_and_validates() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"n": 2, "junk": 1, "free": {"anything": {"goes": 1}}, "q": "1Gi"}, "extra": true});
        prune(&mut obj, &schema());
        assert!(obj.get("extra").is_none());
        assert!(obj["spec"].get("junk").is_none());
        assert_eq!(obj["spec"]["free"]["anything"]["goes"], 1);
        let d = default(&obj, &schema());
        assert_eq!(d["spec"]["mode"], "A");
        assert!(validate(&d, None, &schema()).is_empty());

        let bad = json!({"spec": {"n": 9, "mode": "C", "name": "X1", "q": [1]}});
        let errs = validate(&bad, None, &schema());
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"spec.n"), "{errs:?}");
        assert!(fields.contains(&"spec.mode"), "{errs:?}");
        assert!(fields.contains(&"spec.name"), "{errs:?}");
        assert!(fields.contains(&"spec.q"), "{errs:?}");
        assert!(validate(&json!({"spec": {}}), None, &schema()).iter().any(|(f, _)| f == "spec.n"));
        let cel = validate(&json!({"spec": {"n": 3}}), None, &schema());
        assert!(cel.iter().any(|(_, m)| m.contains("n must not be 3")), "{cel:?}");
    }
}
