//! veil-las
