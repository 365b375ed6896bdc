"""genixer-ray."""
