//! The simulated world outside the API server: EC2 and Auto Scaling, instance types and prices,
//! workload load models, scenario files and the timeline report. Everything here is pure; the
//! control plane loop feeds it simulated time.

pub mod cloud;
pub mod common;
pub mod instance_types;
pub mod load;
pub mod report;
pub mod scenario;
