//! veil-client
