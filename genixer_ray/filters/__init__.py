"""Filters that score generated samples: CLIP region scores, judge P(Yes), self-consistency."""
