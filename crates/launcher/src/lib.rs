//! veil-launcher
