//! veil-policy
