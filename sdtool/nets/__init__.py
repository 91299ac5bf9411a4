"""Sub-networks used by the flows (coupling nets, RRDB condition extractors, content extractor)."""
