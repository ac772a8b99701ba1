"""Hostile-client and careless-user cases (issue 26): what the service and the commands must refuse."""
