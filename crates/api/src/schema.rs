//! Hand-written schema fragments for what schemars cannot express, all structural.

use schemars::{Schema, SchemaGenerator, json_schema};

use crate::duration::{DURATION_OR_NEVER_PATTERN, DURATION_PATTERN};

/// Kubernetes quantity syntax, without a sign (requests, limits and capacities are never negative).
pub const NON_NEGATIVE_QUANTITY_PATTERN: &str =
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Longest quantity text accepted. Real quantities are a dozen characters; the bound is what
/// lets kube-apiserver's CEL cost estimator price the rules that parse them (without it each
/// `quantity()` call is priced as if the string were a whole 3 MiB request).
pub const QUANTITY_MAX_LENGTH: u32 = 64;

/// A quantity that must not be negative: int-or-string, checked by pattern at apply time.
fn non_negative_quantity_schema(description: &str) -> Schema {
    json_schema!({
        "description": description,
        "x-kubernetes-int-or-string": true,
        "maxLength": QUANTITY_MAX_LENGTH,
        "anyOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string", "pattern": NON_NEGATIVE_QUANTITY_PATTERN}
        ]
    })
}

/// `Option<Quantity>` field that must not be negative.
pub fn optional_quantity(_: &mut SchemaGenerator) -> Schema {
    non_negative_quantity_schema("A Kubernetes quantity (e.g. 500m, 2, 4Gi); never negative.")
}

/// `Option<BTreeMap<String, Quantity>>` of resource name to non-negative quantity.
pub fn resource_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "Resource name (cpu, memory, pods, ephemeral-storage or an extended resource) to a non-negative quantity.",
        "maxProperties": 32,
        "additionalProperties": non_negative_quantity_schema("A Kubernetes quantity (e.g. 500m, 2, 4Gi); never negative.")
    })
}

/// Histogram bucket number to scaled weight (at most 176 buckets).
pub fn bucket_weights(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "Bucket number to weight, scaled so the heaviest bucket is 10000.",
        "maxProperties": 200,
        "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 4294967295u64}
    })
}

/// `Option<String>` holding a Go-style duration.
pub fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "description": "A duration such as 30s, 10m or 1h30m (units ms, s, m, h).",
        "pattern": DURATION_PATTERN
    })
}

/// `Option<String>` holding a Go-style duration or `Never`.
pub fn duration_or_never(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "description": "A duration such as 30s, 10m or 720h (units ms, s, m, h), or Never.",
        "pattern": DURATION_OR_NEVER_PATTERN
    })
}
