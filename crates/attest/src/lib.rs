//! veil-attest
