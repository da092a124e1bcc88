//! (filled in with the repository engine)
