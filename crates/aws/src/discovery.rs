//! Finding Auto Scaling Groups and turning them into [`NodeGroup`]s.
//!
//! Cluster Autoscaler finds groups two ways, and so do we: by tags
//! (`--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,...`), through
//! `DescribeAutoScalingGroups` with filters, and by name, in chunks of 100 names. Both are
//! paginated with `MaxRecords` 100. The server-side filter only narrows: several tag keys in
//! one `tag-key` filter match *any* of them, so every group is checked again with
//! [`GroupSource::selects`] before it is kept.

use std::collections::BTreeMap;

use aws_sdk_autoscaling::Client;
use aws_sdk_autoscaling::types::{AutoScalingGroup, Filter};
use omniscale_nodes::{GroupSource, Instance, InstanceState, NodeGroup};

use crate::client::next_page;
use crate::errors::AwsError;

/// The most groups one `DescribeAutoScalingGroups` page returns (AWS's and moto's maximum).
const MAX_RECORDS: i32 = 100;

/// The most names one `DescribeAutoScalingGroups` call may carry.
const NAMES_PER_CALL: usize = 100;

/// The server-side filters for one tag source: one `tag-key` filter with every key whose wanted
/// value is empty (any value will do), and one `tag:<key>` filter per key with a value.
pub(crate) fn tag_filters(tags: &BTreeMap<String, String>) -> Vec<Filter> {
    let any_value: Vec<String> = tags.iter().filter(|(_, v)| v.is_empty()).map(|(k, _)| k.clone()).collect();
    let mut filters = Vec::new();
    if !any_value.is_empty() {
        filters.push(Filter::builder().name("tag-key").set_values(Some(any_value)).build());
    }
    for (k, v) in tags.iter().filter(|(_, v)| !v.is_empty()) {
        filters.push(Filter::builder().name(format!("tag:{k}")).values(v.clone()).build());
    }
    filters
}

/// A group's tags as a map (keys are unique per group).
pub(crate) fn tags_of(group: &AutoScalingGroup) -> BTreeMap<String, String> {
    group.tags().iter().filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned()))).collect()
}

/// Every group some source selects, deduplicated, in name order.
pub(crate) async fn describe_groups(
    client: &Client,
    sources: &[GroupSource],
) -> Result<Vec<AutoScalingGroup>, AwsError> {
    let mut found = BTreeMap::new();
    let mut names: Vec<String> = Vec::new();
    for source in sources {
        match source {
            GroupSource::Name(name) => {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
            GroupSource::Tags(tags) => {
                tracing::debug!(?tags, "DescribeAutoScalingGroups by tags");
                describe_pages(client, None, tag_filters(tags), &mut found).await?;
            }
        }
    }
    for chunk in names.chunks(NAMES_PER_CALL) {
        tracing::debug!(groups = ?chunk, "DescribeAutoScalingGroups by name");
        describe_pages(client, Some(chunk.to_vec()), Vec::new(), &mut found).await?;
    }
    Ok(found
        .into_values()
        .filter(|g| {
            let name = g.auto_scaling_group_name().unwrap_or_default();
            let tags = tags_of(g);
            sources.iter().any(|s| s.selects(name, &tags))
        })
        .collect())
}

/// One group by name, or `None` when AWS does not know it.
pub(crate) async fn describe_one(client: &Client, name: &str) -> Result<Option<AutoScalingGroup>, AwsError> {
    tracing::debug!(group = name, "DescribeAutoScalingGroups");
    let mut found = BTreeMap::new();
    describe_pages(client, Some(vec![name.to_owned()]), Vec::new(), &mut found).await?;
    Ok(found.remove(name))
}

/// Follows `NextToken` until the last page, adding every group to `out` by name.
async fn describe_pages(
    client: &Client,
    names: Option<Vec<String>>,
    filters: Vec<Filter>,
    out: &mut BTreeMap<String, AutoScalingGroup>,
) -> Result<(), AwsError> {
    let filters = if filters.is_empty() { None } else { Some(filters) };
    let mut token: Option<String> = None;
    loop {
        let page = client
            .describe_auto_scaling_groups()
            .set_auto_scaling_group_names(names.clone())
            .set_filters(filters.clone())
            .max_records(MAX_RECORDS)
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| AwsError::sdk("DescribeAutoScalingGroups", e))?;
        for group in page.auto_scaling_groups() {
            if let Some(name) = group.auto_scaling_group_name() {
                out.insert(name.to_owned(), group.clone());
            }
        }
        token = next_page(token.as_deref(), page.next_token());
        if token.is_none() {
            return Ok(());
        }
    }
}

fn non_negative(v: Option<i32>) -> u32 {
    v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

/// The group as the engines see it, without instance types and scaling activity (which take
/// other calls to learn).
pub(crate) fn node_group(group: &AutoScalingGroup) -> NodeGroup {
    let instances = group
        .instances()
        .iter()
        .filter_map(|i| {
            Some(Instance {
                id: i.instance_id()?.to_owned(),
                zone: i.availability_zone().unwrap_or_default().to_owned(),
                instance_type: i.instance_type().map(str::to_owned),
                state: InstanceState::from_lifecycle(i.lifecycle_state().map(|s| s.as_str()).unwrap_or_default()),
            })
        })
        .collect();
    NodeGroup {
        name: group.auto_scaling_group_name().unwrap_or_default().to_owned(),
        min_size: non_negative(group.min_size()),
        max_size: non_negative(group.max_size()),
        desired: non_negative(group.desired_capacity()),
        instances,
        instance_types: Vec::new(),
        zones: group.availability_zones().to_vec(),
        tags: tags_of(group),
        last_failed_activity: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valueless_keys_share_one_filter_and_values_get_their_own() {
        let tags: BTreeMap<String, String> = [
            ("k8s.io/cluster-autoscaler/enabled".to_owned(), String::new()),
            ("k8s.io/cluster-autoscaler/demo".to_owned(), String::new()),
            ("team".to_owned(), "web".to_owned()),
        ]
        .into();
        let filters = tag_filters(&tags);
        assert_eq!(filters.len(), 2);
        assert_eq!(filters[0].name(), Some("tag-key"));
        assert_eq!(filters[0].values(), ["k8s.io/cluster-autoscaler/demo", "k8s.io/cluster-autoscaler/enabled"]);
        assert_eq!(filters[1].name(), Some("tag:team"));
        assert_eq!(filters[1].values(), ["web"]);
        assert!(tag_filters(&BTreeMap::new()).is_empty());
    }
}
