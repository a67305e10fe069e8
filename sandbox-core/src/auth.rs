//! HMAC request auth (being written).
