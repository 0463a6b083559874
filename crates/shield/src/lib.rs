//! veil-shield
