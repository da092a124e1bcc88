//! check (next commit)
