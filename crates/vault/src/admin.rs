//! Operators (issue #8): accounts with two factors, the operator socket, the audit log, alerts
//! and the governance registers. [`service`] decides, [`socket`] carries, [`state`] keeps.

pub mod alerts;
pub mod register;
pub mod service;
pub mod socket;
pub mod state;
