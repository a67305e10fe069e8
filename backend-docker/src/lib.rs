//! The docker backend (being written).
