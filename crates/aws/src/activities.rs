//! The newest failed scaling activity of each group.
//!
//! When AWS cannot launch what was asked (no capacity in the zone, a quota, a broken launch
//! template) the group does not say so in its size; only `DescribeScalingActivities` does.
//! Cluster Autoscaler reads it to give up on a scale-up early and back off the group; the engines
//! get the same signal through [`omniscale_nodes::NodeGroup::last_failed_activity`].
//!
//! Only the newest [`MAX_RECORDS`] activities are read: an older failure has been superseded.
//! A group whose activities cannot be read is reported without one (and a warning), rather than
//! failing the whole refresh.

use std::collections::HashMap;

use aws_sdk_autoscaling::Client;
use aws_sdk_autoscaling::types::{Activity, ScalingActivityStatusCode};
use jiff::Timestamp;
use tokio::task::JoinSet;

use crate::errors::AwsError;

/// How many of the newest activities are read per group.
const MAX_RECORDS: i32 = 10;

/// One group's newest failure, or why it could not be read.
type Lookup = (String, Result<Option<(Timestamp, String)>, AwsError>);

/// How many groups are asked about at once: enough to hide latency, few enough not to be
/// throttled.
const IN_FLIGHT: usize = 8;

/// The newest `Failed` activity's start time and status message (its description when AWS gave
/// no message). Order-independent: AWS lists newest first, but the start time decides.
pub(crate) fn newest_failed(activities: &[Activity]) -> Option<(Timestamp, String)> {
    activities
        .iter()
        .filter(|a| a.status_code() == Some(&ScalingActivityStatusCode::Failed))
        .filter_map(|a| {
            let start = a.start_time()?;
            let nanos = i32::try_from(start.subsec_nanos()).ok()?;
            let at = Timestamp::new(start.secs(), nanos).ok()?;
            let message = a.status_message().or(a.description()).unwrap_or_default().to_owned();
            Some((at, message))
        })
        .max_by_key(|(at, _)| *at)
}

/// One group's newest failed activity.
async fn last_failed(client: &Client, group: &str) -> Result<Option<(Timestamp, String)>, AwsError> {
    tracing::debug!(group, "DescribeScalingActivities");
    let out = client
        .describe_scaling_activities()
        .auto_scaling_group_name(group)
        .max_records(MAX_RECORDS)
        .send()
        .await
        .map_err(|e| AwsError::sdk("DescribeScalingActivities", e))?;
    Ok(newest_failed(out.activities()))
}

/// Every named group's newest failed activity, [`IN_FLIGHT`] groups at a time. Groups whose
/// activities could not be read are missing from the map.
pub(crate) async fn last_failed_all(client: &Client, groups: Vec<String>) -> HashMap<String, (Timestamp, String)> {
    let mut out = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut collect = |joined: Result<Lookup, tokio::task::JoinError>| match joined {
        Ok((group, Ok(Some(failed)))) => {
            out.insert(group, failed);
        }
        Ok((_, Ok(None))) => {}
        Ok((group, Err(err))) => tracing::warn!(group, error = %err, "scaling activities not read"),
        Err(err) => tracing::warn!(error = %err, "scaling activities task failed"),
    };
    for group in groups {
        if tasks.len() >= IN_FLIGHT {
            if let Some(joined) = tasks.join_next().await {
                collect(joined);
            }
        }
        let client = client.clone();
        tasks.spawn(async move {
            let result = last_failed(&client, &group).await;
            (group, result)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        collect(joined);
    }
    out
}

#[cfg(test)]
mod tests {
    use aws_sdk_autoscaling::primitives::DateTime;

    use super::*;

    fn activity(id: &str, secs: i64, status: ScalingActivityStatusCode, message: &str) -> Activity {
        Activity::builder()
            .activity_id(id)
            .auto_scaling_group_name("g")
            .cause("test")
            .start_time(DateTime::from_secs(secs))
            .status_code(status)
            .status_message(message)
            .build()
    }

    #[test]
    fn picks_the_newest_failure() {
        let activities = vec![
            activity("a", 300, ScalingActivityStatusCode::Successful, "ok"),
            activity("b", 200, ScalingActivityStatusCode::Failed, "We currently do not have sufficient capacity"),
            activity("c", 100, ScalingActivityStatusCode::Failed, "older failure"),
            activity("d", 400, ScalingActivityStatusCode::InProgress, ""),
        ];
        let (at, message) = newest_failed(&activities).unwrap();
        assert_eq!(at, Timestamp::from_second(200).unwrap());
        assert_eq!(message, "We currently do not have sufficient capacity");
    }

    #[test]
    fn order_does_not_matter_and_no_failure_is_none() {
        let activities = vec![
            activity("c", 100, ScalingActivityStatusCode::Failed, "older"),
            activity("b", 250, ScalingActivityStatusCode::Failed, "newer"),
        ];
        assert_eq!(newest_failed(&activities).map(|(_, m)| m), Some("newer".to_owned()));
        let ok = vec![activity("a", 300, ScalingActivityStatusCode::Successful, "ok")];
        assert_eq!(newest_failed(&ok), None);
        assert_eq!(newest_failed(&[]), None);
    }
}
