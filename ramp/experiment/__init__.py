"""The evidence experiment (`ramp experiment ramp-effect`): a generated world where search is the only way."""
