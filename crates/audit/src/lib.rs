//! veil-audit
