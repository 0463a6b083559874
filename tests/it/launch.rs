//! What the launcher runs is what was measured (decision 3 as amended), and what it leaves on
//! the host.
