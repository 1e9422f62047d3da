"""A stand-in for one of OIOIOI's apps, whose models have FileFields."""
