//! server

pub mod control;
