"""Archives, model versions and the registry that maps names to them."""
