//! Wire types of the seeds (being written).
