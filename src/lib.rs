//! sandbox facade (being written).
