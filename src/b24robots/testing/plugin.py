"""pytest plugin: fixtures for the portal simulator (filled in by the simulator work)."""
