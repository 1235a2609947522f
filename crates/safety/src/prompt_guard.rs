//! Prompt Guard (spec §5.2). To be written.
