//! veil-cas
