//! veil-secrets
