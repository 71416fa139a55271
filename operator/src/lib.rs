//! popfleet operator (work in progress).
