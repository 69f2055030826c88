"""Recipes shipped as package data (`ramp.configs`): one YAML per recipe."""
