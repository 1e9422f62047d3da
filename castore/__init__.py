"""castore: a content-addressed, deduplicating file store with Filetracker semantics."""
