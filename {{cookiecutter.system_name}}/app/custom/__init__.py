"""Custom logic, one module per component. Regeneration never overwrites these modules."""
